"""/health (the process answers), /ready (the database answers and its schema is
the one this code expects), /metrics (Prometheus). No token needed."""

from __future__ import annotations

from litestar import Response, Router, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST

from sluice.health import service
from sluice.health.schemas import Health, Readiness


@get("/health", operation_id="health", summary="Liveness", exclude_from_auth=True, security=[{}])
async def health() -> Health:
    """Answers while the process runs; it does not touch the database."""
    return Health(status="ok")


@get(
    "/ready",
    operation_id="ready",
    summary="Readiness: database reachable, schema at head",
    exclude_from_auth=True,
    security=[{}],
    responses={503: ResponseSpec(Readiness, description="Not ready; `problem` says why.")},
)
async def ready(state: State) -> Response[Readiness]:
    """200 when the database answers and `sluice.alembic_version` is this code's head
    revision; 503 otherwise (run `sluice migrate`)."""
    readiness = await service.readiness(state.pool)
    return Response(readiness, status_code=200 if readiness.status == "ready" else 503)


@get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    exclude_from_auth=True,
    security=[{}],
    media_type=CONTENT_TYPE_LATEST,
    include_in_schema=True,
)
async def scrape(state: State) -> Response[bytes]:
    """The `sluice_` metrics; queue depth, dead letters and live workers are read from
    the database now, so every API process reports the same numbers (from the read
    pool: a replica's numbers lag by its replication delay)."""
    return Response(await service.exposition(state.read_pool), media_type=CONTENT_TYPE_LATEST)


router = Router(path="/", route_handlers=[health, ready, scrape])
