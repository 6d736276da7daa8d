"""The jobs API."""

from litestar import Router

from app.jobs.routes import JobsController

router = Router(path="/", route_handlers=[JobsController])
