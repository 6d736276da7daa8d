"""/api/v1/dlq: the dead-letter queue (jobs whose attempts ran out): list, retry, discard."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Router, get, post
from litestar.params import QueryParameter

from sluice.auth import OPERATOR, VIEWER
from sluice.core.engine import DeadLetter, Job
from sluice.core.jobs import QUEUE_NAME, TASK_NAME
from sluice.dlq import service
from sluice.dlq.schemas import DeadLetterSize
from sluice.http.deps import Caller, Conn, ReadConn
from sluice.http.errors import error_responses
from sluice.http.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.http.shapes import IdPath


class DeadLettersController(Controller):
    path = "/dlq"
    tags = ["dlq"]

    @get(
        "/",
        operation_id="dlq_list",
        summary="List dead letters",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_dead(
        self,
        read_conn: ReadConn,
        principal: Caller,
        queue: Annotated[str | None, QueryParameter(max_length=QUEUE_NAME.max_length)] = None,
        task: Annotated[str | None, QueryParameter(max_length=TASK_NAME.max_length)] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Page[DeadLetter]:
        """Unresolved dead letters of the caller's tenant, newest first."""
        entries = await service.list_dead(
            read_conn,
            principal,
            queue=queue,
            task=task,
            before_id=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page(entries, limit, key="dead_letter_id")

    @get(
        "/size",
        operation_id="dlq_size",
        summary="Count dead letters",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def size(self, read_conn: ReadConn, principal: Caller) -> DeadLetterSize:
        """How many unresolved dead letters the caller's tenant has (the DLQ's size)."""
        return DeadLetterSize(size=await service.size(read_conn, principal))

    @post(
        "/{job_id:int}/retry",
        operation_id="dlq_retry",
        summary="Retry a dead job",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403, 404),
    )
    async def retry(self, job_id: IdPath, conn: Conn, principal: Caller) -> Job:
        """Give the job fresh attempts; its dead letter is resolved as `retried`."""
        return await service.retry(conn, principal, job_id)

    @post(
        "/{job_id:int}/discard",
        operation_id="dlq_discard",
        summary="Discard a dead job",
        status_code=200,
        guards=OPERATOR,
        responses=error_responses(403, 404),
    )
    async def discard(self, job_id: IdPath, conn: Conn, principal: Caller) -> Job:
        """Resolve the dead letter without retrying: the job stays `failed` and may be pruned."""
        return await service.discard(conn, principal, job_id)


router = Router(path="/", route_handlers=[DeadLettersController])
