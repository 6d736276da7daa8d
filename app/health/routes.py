"""/health (the process answers), /ready (the database answers and its schema is
the one this code expects), /metrics (Prometheus). No token needed."""

from __future__ import annotations

import functools

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from msgspec import Struct
from prometheus_client import CONTENT_TYPE_LATEST

from sluice.core import metrics
from sluice.core.migrate import head_revision
from sluice.core.queries import Q
from sluice.counts import STATES

# Reading the migration scripts takes milliseconds; they do not change while we run.
_head_revision = functools.cache(head_revision)


class Health(Struct):
    status: str


class Readiness(Struct):
    status: str
    schema_revision: str | None
    expected_revision: str
    problem: str | None = None


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
    expected = _head_revision()
    try:
        async with state.pool.connection(timeout=5) as conn:
            revision = await Q.schema_revision(conn)
    except Exception as exc:  # any failure to reach the database means "not ready"
        return Response(
            Readiness("unavailable", None, expected, f"database: {type(exc).__name__}"),
            status_code=503,
        )
    if revision != expected:
        problem = f"schema at {revision}, expected {expected}: run `sluice migrate`"
        return Response(Readiness("migrating", revision, expected, problem), status_code=503)
    return Response(Readiness("ready", revision, expected), status_code=200)


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
    the database now, so every API process reports the same numbers."""
    async with state.pool.connection() as conn:
        snapshot = metrics.DatabaseSnapshot(
            await Q.queue_depths(conn),
            STATES,
            dead_letters=await Q.dead_letter_size(conn, tenant=None),
            workers_alive=await Q.workers_alive(conn),
        )
    return Response(snapshot.exposition(), media_type=CONTENT_TYPE_LATEST)
