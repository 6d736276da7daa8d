"""The workers API."""

from litestar import Router

from app.workers.routes import WorkersController

router = Router(path="/", route_handlers=[WorkersController])
