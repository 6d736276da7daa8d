"""The schedules API (CRUD; the worker's scheduler fires them)."""

from litestar import Router

from sluice.schedules.routes import SchedulesController

router = Router(path="/", route_handlers=[SchedulesController])
