"""The workers area's database calls. Workers serve every tenant, so every role sees
them all; pausing one affects every tenant."""

from __future__ import annotations

from psycopg import AsyncConnection

from sluice.core import engine
from sluice.core.engine import Worker
from sluice.http.errors import found

# A list without pages: there are never this many workers at once.
MAX_WORKERS = 10_000


async def list_workers(conn: AsyncConnection) -> list[Worker]:
    return await engine.worker_list(conn, limit=MAX_WORKERS)


async def set_paused(conn: AsyncConnection, worker_id: str, paused: bool) -> Worker:
    """Pause or resume a worker; a 404 when there is no such worker."""
    if not await engine.worker_set_paused(conn, id=worker_id, paused=paused):
        found(None, f"worker {worker_id!r}")
    return found(await engine.worker_get(conn, id=worker_id), f"worker {worker_id!r}")
