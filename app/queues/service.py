"""The queues area's rules. Queue settings are shared by every tenant (a paused
queue is paused for all); the counts a non-admin sees are its own tenant's jobs.
A queue needs no row to exist: one nobody has used is simply empty."""

from __future__ import annotations

from psycopg import AsyncConnection

from sluice.auth import Principal
from sluice.core import engine
from sluice.core.engine import QueueRow
from sluice.http.shapes import spread
from sluice.queues.schemas import Queue


def _to_queue(row: QueueRow) -> Queue:
    return Queue(
        name=row.name,
        oldest_ready_seconds=row.oldest_ready_seconds,
        paused=row.paused,
        concurrency_limit=row.concurrency_limit,
        **spread(row.counts),
    )


async def list_queues(conn: AsyncConnection, principal: Principal) -> list[Queue]:
    """Every queue with jobs or settings, by name."""
    return [
        _to_queue(row) for row in await engine.queue_list(conn, tenant=principal.scope, name=None)
    ]


async def get_queue(conn: AsyncConnection, principal: Principal, name: str) -> Queue:
    rows = await engine.queue_list(conn, tenant=principal.scope, name=name)
    if rows:
        return _to_queue(rows[0])
    return Queue(
        name=name, oldest_ready_seconds=0.0, paused=False, concurrency_limit=None, **spread({})
    )


async def pause(conn: AsyncConnection, principal: Principal, name: str) -> Queue:
    await engine.queue_pause(conn, name=name)
    return await get_queue(conn, principal, name)


async def resume(conn: AsyncConnection, principal: Principal, name: str) -> Queue:
    await engine.queue_resume(conn, name=name)
    return await get_queue(conn, principal, name)


async def set_concurrency(
    conn: AsyncConnection, principal: Principal, name: str, limit: int | None
) -> Queue:
    await engine.queue_set_concurrency(conn, name=name, limit=limit)
    return await get_queue(conn, principal, name)
