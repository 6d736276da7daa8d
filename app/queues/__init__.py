"""The queues API."""

from litestar import Router

from app.queues.routes import QueuesController

router = Router(path="/", route_handlers=[QueuesController])
