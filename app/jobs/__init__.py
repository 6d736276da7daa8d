"""The jobs API."""

from litestar import Router

from app.jobs.routes import JobsController
from app.jobs.stats import JobStatsController

router = Router(path="/", route_handlers=[JobsController, JobStatsController])
