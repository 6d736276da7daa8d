"""/api/v1/workers: the worker registry with heartbeats and running counts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get, post
from litestar.params import PathParameter
from msgspec import Struct

from sluice.auth import ADMIN, VIEWER
from sluice.core.queries import Q
from sluice.deps import Conn
from sluice.errors import error_responses, not_found

WorkerPath = Annotated[str, PathParameter(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
MAX_WORKERS = 10_000


class Worker(Struct, kw_only=True):
    """A worker process: what it serves, its last heartbeat, how much it runs."""

    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    paused: bool
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    running: int
    alive: bool


class WorkerList(Struct):
    items: list[Worker]
    next_cursor: None = None


class WorkersController(Controller):
    path = "/workers"
    tags = ["workers"]

    @get(
        "/",
        operation_id="worker_list",
        summary="List workers",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_workers(self, conn: Conn) -> WorkerList:
        """Live workers first. Workers serve every tenant, so every role sees them all."""
        rows = await Q.worker_list(conn, limit=MAX_WORKERS)
        return WorkerList(items=msgspec.convert(rows, list[Worker]))

    @post(
        "/{worker_id:str}/pause",
        operation_id="worker_pause",
        summary="Pause a worker",
        status_code=200,
        guards=ADMIN,
        responses=error_responses(403, 404),
    )
    async def pause(self, worker_id: WorkerPath, conn: Conn) -> Worker:
        """The worker stops claiming jobs and finishes those it runs (affects every tenant)."""
        return await self._set_paused(conn, worker_id, True)

    @post(
        "/{worker_id:str}/resume",
        operation_id="worker_resume",
        summary="Resume a worker",
        status_code=200,
        guards=ADMIN,
        responses=error_responses(403, 404),
    )
    async def resume(self, worker_id: WorkerPath, conn: Conn) -> Worker:
        """The worker claims jobs again."""
        return await self._set_paused(conn, worker_id, False)

    @staticmethod
    async def _set_paused(conn: Conn, worker_id: str, paused: bool) -> Worker:
        if not await Q.worker_set_paused(conn, id=worker_id, paused=paused):
            raise not_found(f"worker {worker_id!r}")
        row = await Q.worker_get(conn, id=worker_id)
        if row is None:
            raise not_found(f"worker {worker_id!r}")
        return msgspec.convert(row, Worker)
