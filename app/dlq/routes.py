"""/api/v1/dlq: the dead-letter queue (jobs whose attempts ran out): list, retry, discard."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.params import QueryParameter
from msgspec import Struct

from sluice.auth import OPERATOR, VIEWER
from sluice.core.queries import Q
from sluice.deps import Caller, Conn
from sluice.errors import error_responses, not_found
from sluice.jobs.convert import get_job
from sluice.jobs.schemas import Job
from sluice.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.redact import redact
from sluice.resources import IdPath


class DeadLetter(Struct, kw_only=True):
    """A job that ended `failed`, with its error history, waiting for an operator."""

    dead_letter_id: int
    job_id: int
    tenant: str
    queue: str
    task: str
    payload: Any
    run_id: int | None
    attempts: int
    reason: str
    last_error: str | None
    errors: list[dict[str, Any]]
    failed_at: datetime


class DeadLetterSize(Struct):
    """How many dead letters wait for an operator."""

    size: int


def _to_dead_letter(row: dict) -> DeadLetter:
    return msgspec.convert({**row, "payload": redact(row["payload"])}, DeadLetter)


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
        conn: Conn,
        principal: Caller,
        queue: Annotated[str | None, QueryParameter(max_length=64)] = None,
        task: Annotated[str | None, QueryParameter(max_length=200)] = None,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Page[DeadLetter]:
        """Unresolved dead letters of the caller's tenant, newest first."""
        rows = await Q.dead_letter_list(
            conn,
            tenant=principal.scope,
            queue=queue,
            task=task,
            before_id=decode_cursor(cursor),
            limit=limit + 1,
        )
        return page([_to_dead_letter(r) for r in rows], limit, key="dead_letter_id")

    @get(
        "/size",
        operation_id="dlq_size",
        summary="Count dead letters",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def size(self, conn: Conn, principal: Caller) -> DeadLetterSize:
        """How many unresolved dead letters the caller's tenant has (the DLQ's size)."""
        return DeadLetterSize(size=await Q.dead_letter_size(conn, tenant=principal.scope))

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
        await self._entry(conn, principal, job_id)
        await Q.dead_letter_retry(conn, job_id=job_id)
        return await get_job(conn, principal, job_id)

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
        await self._entry(conn, principal, job_id)
        await Q.dead_letter_discard(conn, job_id=job_id)
        return await get_job(conn, principal, job_id)

    @staticmethod
    async def _entry(conn: Conn, principal: Caller, job_id: int) -> dict:
        row = await Q.dead_letter_get(conn, job_id=job_id, tenant=principal.scope)
        if row is None:
            raise not_found(f"dead letter of job {job_id}")
        return row
