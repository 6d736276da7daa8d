"""Database rows to job resources, with secrets masked."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection

from sluice.auth import Principal
from sluice.core.queries import Q
from sluice.errors import not_found
from sluice.jobs.schemas import Job, JobDetail
from sluice.redact import redact


def _masked(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "payload": redact(row["payload"]), "notify": redact(row["notify"])}


def to_job(row: dict[str, Any]) -> Job:
    return msgspec.convert(_masked(row), Job)


def to_job_detail(row: dict[str, Any], parents: list[int], attempts: list[dict]) -> JobDetail:
    return msgspec.convert(
        {
            **_masked(row),
            "depends_on": parents,
            "attempts": attempts,
            "output": attempts[-1]["output"] if attempts else None,
        },
        JobDetail,
    )


async def job_row(conn: AsyncConnection, principal: Principal, job_id: int) -> dict[str, Any]:
    """The job's row if the caller's tenant may see it, else a 404."""
    row = await Q.job_get(conn, id=job_id, tenant=principal.scope)
    if row is None:
        raise not_found(f"job {job_id}")
    return row


async def get_job(conn: AsyncConnection, principal: Principal, job_id: int) -> Job:
    """The job as the caller may see it, or a 404."""
    return to_job(await job_row(conn, principal, job_id))
