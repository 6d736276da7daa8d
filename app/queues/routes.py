"""/api/v1/queues: depth per state, pause, resume, concurrency limit.

Queue settings are shared by every tenant (a paused queue is paused for all);
the counts a non-admin sees are its own tenant's jobs.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Router, get, post, put

from sluice.auth import OPERATOR, VIEWER
from sluice.http.deps import Caller, Conn, ReadConn
from sluice.http.errors import error_responses
from sluice.http.openapi import example_body
from sluice.http.shapes import QueueNamePath
from sluice.queues import service
from sluice.queues.schemas import Concurrency, Queue, QueueList


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
    async def list_queues(self, read_conn: ReadConn, principal: Caller) -> QueueList:
        """Every queue with jobs or settings, by name (all of them: there are few)."""
        return QueueList(items=await service.list_queues(read_conn, principal))

    @get(
        "/{name:str}",
        operation_id="queue_get",
        summary="Get a queue",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def show(self, name: QueueNamePath, conn: Conn, principal: Caller) -> Queue:
        """One queue's depth per state and settings."""
        return await service.get_queue(conn, principal, name)

    @post(
        "/{name:str}/pause",
        operation_id="queue_pause",
        summary="Pause a queue",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403),
    )
    async def pause(self, name: QueueNamePath, conn: Conn, principal: Caller) -> Queue:
        """Workers stop claiming the queue's jobs (running ones finish). For every tenant."""
        return await service.pause(conn, principal, name)

    @post(
        "/{name:str}/resume",
        operation_id="queue_resume",
        summary="Resume a queue",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403),
    )
    async def resume(self, name: QueueNamePath, conn: Conn, principal: Caller) -> Queue:
        """Workers claim the queue's jobs again."""
        return await service.resume(conn, principal, name)

    @put(
        "/{name:str}/concurrency",
        operation_id="queue_set_concurrency",
        summary="Set a queue's concurrency limit",
        guards=OPERATOR,
        responses=error_responses(403),
    )
    async def set_concurrency(
        self,
        name: QueueNamePath,
        data: Annotated[
            Concurrency, example_body("at most 4 at once", {"limit": 4}, no_limit={"limit": None})
        ],
        conn: Conn,
        principal: Caller,
    ) -> Queue:
        """Limit how many of the queue's jobs run at once across all workers."""
        return await service.set_concurrency(conn, principal, name, data.limit)


router = Router(path="/", route_handlers=[QueuesController])
