"""The workers API."""

from litestar import Router

from sluice.workers.routes import WorkersController

router = Router(path="/", route_handlers=[WorkersController])
