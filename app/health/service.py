"""Readiness (the database answers, its schema is this code's) and the metrics
read from the database at scrape time, so every API process reports the same."""

from __future__ import annotations

import functools

from psycopg_pool import AsyncConnectionPool

from sluice.core import engine, metrics
from sluice.core.db import NOTIFICATIONS
from sluice.core.jobs import JOB_STATES
from sluice.core.migrate import head_revision
from sluice.health.schemas import Readiness

# Reading the migration scripts takes milliseconds; they do not change while we run.
_head_revision = functools.cache(head_revision)


async def readiness(pool: AsyncConnectionPool) -> Readiness:
    """`ready` when the database answers and `sluice.alembic_version` is this code's head."""
    expected = _head_revision()
    try:
        async with pool.connection(timeout=5) as conn:
            revision = await engine.schema_revision(conn)
    except Exception as exc:  # any failure to reach the database means "not ready"
        return Readiness("unavailable", None, expected, f"database: {type(exc).__name__}")
    if revision != expected:
        problem = f"schema at {revision}, expected {expected}: run `sluice migrate`"
        return Readiness("migrating", revision, expected, problem)
    return Readiness(
        "ready",
        revision,
        expected,
        notifications=NOTIFICATIONS.state,
        warning=NOTIFICATIONS.warning(),
    )


async def exposition(pool: AsyncConnectionPool) -> bytes:
    """The API's metrics, with the database-wide gauges (queue depth, oldest ready job,
    consumers, dead letters, live workers, waiting DAG nodes, queued runs) read now."""
    async with pool.connection() as conn:
        snapshot = metrics.DatabaseSnapshot(
            await engine.queue_depths(conn),
            JOB_STATES,
            dead_letters=await engine.dead_letter_size(conn, tenant=None),
            workers_alive=await engine.workers_alive(conn),
            nodes_waiting={w.kind: w.nodes for w in await engine.dag_nodes_waiting(conn)},
            runs_queued=await engine.dag_runs_queued(conn),
        )
    return snapshot.exposition()
