"""/api/v1/queues: depth per state, pause, resume, concurrency limit.

Queue settings are shared by every tenant (a paused queue is paused for all);
the counts a non-admin sees are its own tenant's jobs.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post, put
from litestar.params import PathParameter
from msgspec import Meta, Struct

from sluice.auth import OPERATOR, VIEWER
from sluice.core.queries import Q
from sluice.counts import StateCounts, spread
from sluice.deps import Caller, Conn
from sluice.errors import error_responses
from sluice.openapi import example_body

QueuePath = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]


class Queue(StateCounts, kw_only=True):
    """A queue: jobs per state, the oldest ready job's wait, and its settings."""

    name: str
    oldest_ready_seconds: float
    paused: bool
    concurrency_limit: int | None


class QueueList(Struct):
    items: list[Queue]
    next_cursor: None = None


class Concurrency(Struct, forbid_unknown_fields=True):
    """At most `limit` jobs of the queue run at once across all workers (null: no limit)."""

    limit: Annotated[int, Meta(ge=1, le=1_000_000)] | None


def _to_queue(row: dict) -> Queue:
    return Queue(
        name=row["name"],
        oldest_ready_seconds=row["oldest_ready_seconds"],
        paused=row["paused"],
        concurrency_limit=row["concurrency_limit"],
        **spread(row["counts"]),
    )


async def _queue(conn: Conn, principal: Caller, name: str) -> Queue:
    rows = await Q.queue_list(conn, tenant=principal.scope, name=name)
    if rows:
        return _to_queue(rows[0])
    # A queue needs no row to exist: one nobody has used is simply empty.
    return Queue(
        name=name, oldest_ready_seconds=0.0, paused=False, concurrency_limit=None, **spread({})
    )


class QueuesController(Controller):
    path = "/queues"
    tags = ["queues"]

    @get(
        "/",
        operation_id="queue_list",
        summary="List queues",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_queues(self, conn: Conn, principal: Caller) -> QueueList:
        """Every queue with jobs or settings, by name (all of them: there are few)."""
        rows = await Q.queue_list(conn, tenant=principal.scope, name=None)
        return QueueList(items=[_to_queue(row) for row in rows])

    @get(
        "/{name:str}",
        operation_id="queue_get",
        summary="Get a queue",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def show(self, name: QueuePath, conn: Conn, principal: Caller) -> Queue:
        """One queue's depth per state and settings."""
        return await _queue(conn, principal, name)

    @post(
        "/{name:str}/pause",
        operation_id="queue_pause",
        summary="Pause a queue",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403),
    )
    async def pause(self, name: QueuePath, conn: Conn, principal: Caller) -> Queue:
        """Workers stop claiming the queue's jobs (running ones finish). For every tenant."""
        await Q.queue_pause(conn, name=name)
        return await _queue(conn, principal, name)

    @post(
        "/{name:str}/resume",
        operation_id="queue_resume",
        summary="Resume a queue",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403),
    )
    async def resume(self, name: QueuePath, conn: Conn, principal: Caller) -> Queue:
        """Workers claim the queue's jobs again."""
        await Q.queue_resume(conn, name=name)
        return await _queue(conn, principal, name)

    @put(
        "/{name:str}/concurrency",
        operation_id="queue_set_concurrency",
        summary="Set a queue's concurrency limit",
        guards=OPERATOR,
        responses=error_responses(403),
    )
    async def set_concurrency(
        self,
        name: QueuePath,
        data: Annotated[
            Concurrency, example_body("at most 4 at once", {"limit": 4}, no_limit={"limit": None})
        ],
        conn: Conn,
        principal: Caller,
    ) -> Queue:
        """Limit how many of the queue's jobs run at once across all workers."""
        await Q.queue_set_concurrency(conn, name=name, limit=data.limit)
        return await _queue(conn, principal, name)
