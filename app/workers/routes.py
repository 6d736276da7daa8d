"""/api/v1/workers: the worker registry with heartbeats and running counts."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Router, get, post
from litestar.params import PathParameter

from sluice.auth import ADMIN, VIEWER
from sluice.core.engine import Worker
from sluice.http.deps import Conn, ReadConn
from sluice.http.errors import error_responses
from sluice.workers import service
from sluice.workers.schemas import WorkerList

WorkerPath = Annotated[str, PathParameter(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


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
    async def list_workers(self, read_conn: ReadConn) -> WorkerList:
        """Live workers first. Workers serve every tenant, so every role sees them all."""
        return WorkerList(items=await service.list_workers(read_conn))

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
        return await service.set_paused(conn, worker_id, True)

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
        return await service.set_paused(conn, worker_id, False)


router = Router(path="/", route_handlers=[WorkersController])
