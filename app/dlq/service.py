"""The DLQ area's rules: entries are read in the caller's tenant; retrying gives the
job fresh attempts, discarding resolves the entry and leaves the job `failed`."""

from __future__ import annotations

import msgspec
from psycopg import AsyncConnection

from sluice.auth import Principal
from sluice.core import engine
from sluice.core.engine import DeadLetter, Job
from sluice.http.errors import found
from sluice.http.redact import redact
from sluice.http.shapes import get_job


def shown(entry: DeadLetter) -> DeadLetter:
    """The entry as the API shows it: secrets in the payload masked."""
    return msgspec.structs.replace(entry, payload=redact(entry.payload))


async def list_dead(
    conn: AsyncConnection,
    principal: Principal,
    *,
    queue: str | None,
    task: str | None,
    before_id: int | None,
    limit: int,
) -> list[DeadLetter]:
    entries = await engine.dead_letter_list(
        conn, tenant=principal.scope, queue=queue, task=task, before_id=before_id, limit=limit
    )
    return [shown(entry) for entry in entries]


async def size(conn: AsyncConnection, principal: Principal) -> int:
    return await engine.dead_letter_size(conn, tenant=principal.scope)


async def _entry(conn: AsyncConnection, principal: Principal, job_id: int) -> DeadLetter:
    entry = await engine.dead_letter_get(conn, job_id=job_id, tenant=principal.scope)
    return found(entry, f"dead letter of job {job_id}")


async def retry(conn: AsyncConnection, principal: Principal, job_id: int) -> Job:
    """Give the job fresh attempts; its entry is resolved as `retried`."""
    await _entry(conn, principal, job_id)
    await engine.dead_letter_retry(conn, job_id=job_id)
    return await get_job(conn, principal, job_id)


async def discard(conn: AsyncConnection, principal: Principal, job_id: int) -> Job:
    """Resolve the entry without retrying: the job stays `failed` and may be pruned."""
    await _entry(conn, principal, job_id)
    await engine.dead_letter_discard(conn, job_id=job_id)
    return await get_job(conn, principal, job_id)
