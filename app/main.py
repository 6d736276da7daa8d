"""The REST API application: assembles the areas' routers and the plumbing, nothing else.

    app = create_app(load(ApiSettings))

Each area (sluice.jobs, sluice.dags, ...) exposes a `router` in its routes.py;
adding an area means adding it to AREAS. `/` is left free for the dashboard.
See docs/architecture.md for the rooms and the layers.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from litestar import Litestar, Request, Router
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from psycopg_pool import AsyncConnectionPool

from sluice import dashboard
from sluice.auth import Principal, jwt_auth
from sluice.core.tasks import TaskCatalog
from sluice.dags import routes as dags
from sluice.dlq import routes as dlq
from sluice.health import routes as health
from sluice.http.bodies import JsonRequest
from sluice.http.errors import EXCEPTION_HANDLERS
from sluice.http.limits import BodyLimitMiddleware
from sluice.http.openapi import openapi_config
from sluice.http.pool import pool_lifespan, provide_connection, provide_read_connection
from sluice.http.request_metrics import RequestMetricsMiddleware
from sluice.http.settings import ApiSettings
from sluice.http.waiting import waiting_lifespan
from sluice.jobs import routes as jobs
from sluice.queues import routes as queues
from sluice.runs import routes as runs
from sluice.schedules import routes as schedules
from sluice.workers import routes as workers

API_PREFIX = "/api/v1"
AREAS = [jobs, dags, runs, dlq, queues, schedules, workers]


def provide_principal(request: Request[Principal, Any, Any]) -> Principal:
    """The authenticated caller (routes outside /api/ have none and do not ask)."""
    return request.user


def create_app(settings: ApiSettings, *, pool: AsyncConnectionPool | None = None) -> Litestar:
    """The API for `settings`. With `pool`, use that pool instead of opening one."""
    auth = jwt_auth(settings)
    catalog = TaskCatalog(allow_shell=settings.allow_shell)

    api = Router(path=API_PREFIX, route_handlers=[area.router for area in AREAS])
    return Litestar(
        route_handlers=[api, health.router, dashboard.router],
        on_app_init=[auth.on_app_init],
        lifespan=[pool_lifespan(settings, pool), waiting_lifespan(settings)],
        dependencies={
            "conn": Provide(provide_connection),
            "read_conn": Provide(provide_read_connection),
            "principal": Provide(provide_principal, sync_to_thread=False),
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "catalog": Provide(lambda: catalog, sync_to_thread=False),
        },
        middleware=[
            RequestMetricsMiddleware,
            DefineMiddleware(
                BodyLimitMiddleware,
                default=settings.max_body_bytes,
                large=settings.max_batch_body_bytes,
            ),
        ],
        request_class=JsonRequest,
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=max(settings.max_body_bytes, settings.max_batch_body_bytes),
        openapi_config=openapi_config(version("sluice")),
        debug=False,
    )
