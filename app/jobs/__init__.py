"""The jobs API."""

from litestar import Router

from sluice.jobs.routes import JobsController
from sluice.jobs.stats import JobStatsController

router = Router(path="/", route_handlers=[JobsController, JobStatsController])
