"""The dead-letter queue API."""

from litestar import Router

from sluice.dlq.routes import DeadLettersController

router = Router(path="/", route_handlers=[DeadLettersController])
