"""The queues API."""

from litestar import Router

from sluice.queues.routes import QueuesController

router = Router(path="/", route_handlers=[QueuesController])
