"""The dead-letter queue API."""

from litestar import Router

from app.dlq.routes import DeadLettersController

router = Router(path="/", route_handlers=[DeadLettersController])
