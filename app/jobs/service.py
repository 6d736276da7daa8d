"""The jobs area's rules: submitting (validate every job, then insert them all in
one statement and one transaction), reading, cancelling and retrying jobs.

One job and ten thousand take the same path (job_submit_many), so the rules
(idempotency, dependencies, permissions) cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from litestar.datastructures import State
from psycopg import AsyncConnection

from sluice.auth import Principal, require_shell_permission
from sluice.core import engine
from sluice.core.engine import Job, JobFilter, ThroughputMinute
from sluice.core.jobs import RUN_AT_END, RUN_AT_MIN
from sluice.core.metrics import JOBS_ENQUEUED
from sluice.core.problems import Problems
from sluice.core.tasks import TaskCatalog
from sluice.core.waiting import JOB_ENDED
from sluice.http.errors import FieldError, Refusal, invalid
from sluice.http.shapes import get_job, notify_json, shown_job, template_problems
from sluice.http.waiting import waiting
from sluice.jobs.schemas import JobDetail, JobSubmit, WaitTimes

# Wait-time percentiles are computed over at most this many of the newest finished jobs.
WAIT_SAMPLE = 10_000


@dataclass(frozen=True)
class Submitted:
    id: int
    created: bool


def fingerprint(job: JobSubmit) -> str:
    """A digest of everything the request asked for, to tell a replay from a reuse."""
    return hashlib.sha256(msgspec.json.encode(job, order="sorted")).hexdigest()


def job_problems(job: JobSubmit, catalog: TaskCatalog, where: str) -> Problems:
    """Every problem with one job that its schema cannot express."""
    found = template_problems(job, catalog, where)
    prefix = f"{where}." if where else ""
    if job.run_at is not None and job.delay_seconds is not None:
        found.append((prefix + "delay_seconds", "give run_at or delay_seconds, not both"))
    if job.run_at is not None and not RUN_AT_MIN <= job.run_at < RUN_AT_END:
        found.append(
            (
                prefix + "run_at",
                f"must be at or after {RUN_AT_MIN.isoformat()} and before {RUN_AT_END.isoformat()}",
            )
        )
    return found


def check(
    jobs: Sequence[JobSubmit], principal: Principal, catalog: TaskCatalog, where: str | None
) -> None:
    """Raise 403 or 422 unless every job may be submitted by `principal`."""
    require_shell_permission((job.task for job in jobs), principal)
    found: Problems = []
    seen: dict[str, int] = {}
    for i, job in enumerate(jobs):
        at = "" if where is None else f"{where}[{i}]"
        found += job_problems(job, catalog, at)
        if job.idempotency_key is not None:
            if job.idempotency_key in seen:
                found.append(
                    (
                        f"{at}.idempotency_key",
                        f"repeats the key of {where}[{seen[job.idempotency_key]}]",
                    )
                )
            seen.setdefault(job.idempotency_key, i)
    if found:
        raise invalid(found)


async def submit_one(
    conn: AsyncConnection, principal: Principal, job: JobSubmit, catalog: TaskCatalog
) -> tuple[Job, bool]:
    """Insert one job for the caller's tenant and read it back, in one transaction:
    (the job, whether this call created it)."""
    async with conn.transaction():
        [submitted] = await _insert(conn, principal, [job], catalog, where=None)
        created = await get_job(conn, principal, submitted.id)
    _count_enqueued([job], [submitted])
    return created, submitted.created


async def submit_batch(
    conn: AsyncConnection, principal: Principal, jobs: Sequence[JobSubmit], catalog: TaskCatalog
) -> list[Submitted]:
    """Insert `jobs` (the request's `jobs` list) in one transaction; their ids in order."""
    async with conn.transaction():
        result = await _insert(conn, principal, jobs, catalog, where="jobs")
    _count_enqueued(jobs, result)
    return result


async def _insert(
    conn: AsyncConnection,
    principal: Principal,
    jobs: Sequence[JobSubmit],
    catalog: TaskCatalog,
    *,
    where: str | None,
) -> list[Submitted]:
    """Insert `jobs` for the caller's tenant (inside the caller's transaction).

    `where` names the list in the request (`jobs` for a batch) so errors point
    at the job at fault; None for a single job, whose fields are top-level.
    """
    check(jobs, principal, catalog, where)
    tenant = principal.tenant
    rows = [
        {
            "task": job.task,
            "payload": job.payload,
            "queue": job.queue,
            "priority": job.priority,
            "run_at": job.run_at,
            "delay_seconds": job.delay_seconds,
            "max_attempts": job.max_attempts,
            "backoff": job.backoff,
            "backoff_base": job.backoff_base,
            "backoff_max": job.backoff_max,
            "timeout": job.timeout,
            "idempotency_key": job.idempotency_key,
            "notify": notify_json(job.notify),
            "fingerprint": fingerprint(job) if job.idempotency_key is not None else None,
        }
        for job in jobs
    ]
    parents = sorted({p for job in jobs for p in job.depends_on})
    if parents:
        visible = await engine.job_ids_visible(conn, ids=parents, tenant=tenant)
        missing = [
            (f"{_at(where, i)}depends_on[{k}]", f"job {p} does not exist")
            for i, job in enumerate(jobs)
            for k, p in enumerate(job.depends_on)
            if p not in visible
        ]
        if missing:
            raise invalid(missing)
    inserted = await engine.job_submit_many(conn, jobs=rows, tenant=tenant)
    result = _pair(jobs, inserted)
    await _check_replays(conn, tenant, jobs, result, where)
    edges = [
        (p, s.id) for job, s in zip(jobs, result, strict=True) if s.created for p in job.depends_on
    ]
    if edges:
        await engine.job_edges_add(
            conn, parents=[p for p, _ in edges], children=[c for _, c in edges]
        )
    return result


def _count_enqueued(jobs: Sequence[JobSubmit], result: list[Submitted]) -> None:
    for (queue, task), n in Counter(
        (j.queue, j.task) for j, s in zip(jobs, result, strict=True) if s.created
    ).items():
        JOBS_ENQUEUED.labels(queue=queue, task=task).inc(n)


def _at(where: str | None, i: int) -> str:
    return "" if where is None else f"{where}[{i}]."


def _pair(jobs: Sequence[JobSubmit], inserted: list[engine.Inserted]) -> list[Submitted]:
    """Match inserted rows (in input order, skipped ones missing) to the input jobs."""
    created_keys = {r.idempotency_key for r in inserted if r.idempotency_key is not None}
    rows = iter(inserted)
    result: list[Submitted] = []
    for job in jobs:
        key = job.idempotency_key
        if key is not None and key not in created_keys:
            result.append(Submitted(0, False))  # an existing job; its id is looked up next
            continue
        row = next(rows)
        assert row.idempotency_key == key, "inserted rows came back out of input order"
        result.append(Submitted(row.id, True))
    return result


async def _check_replays(
    conn: AsyncConnection,
    tenant: str,
    jobs: Sequence[JobSubmit],
    result: list[Submitted],
    where: str | None,
) -> None:
    """Fill in the ids of replayed jobs; 409 if a key was used for a different request."""
    replayed = [i for i, s in enumerate(result) if not s.created]
    if not replayed:
        return
    keys = [jobs[i].idempotency_key for i in replayed]
    existing = {
        r.idempotency_key: r
        for r in await engine.job_by_idempotency_keys(conn, tenant=tenant, keys=keys)
    }
    conflicts: list[FieldError] = []
    for i in replayed:
        job = jobs[i]
        row = existing.get(job.idempotency_key)
        if row is None:  # pruned in between: the client may simply try again
            raise Refusal(409, "The job holding this idempotency key just went away; retry.")
        # Jobs enqueued by plain SQL have no fingerprint: a replay cannot be told apart.
        if row.request_fingerprint not in (None, fingerprint(job)):
            conflicts.append(
                FieldError(
                    f"{_at(where, i)}idempotency_key", "was used before for a different request"
                )
            )
        result[i] = Submitted(row.id, False)
    if conflicts:
        raise Refusal(409, "An idempotency key was reused with a different request.", conflicts)


async def job_detail(conn: AsyncConnection, principal: Principal, job_id: int) -> JobDetail:
    """The job, its parents and every attempt, or a 404."""
    job = await get_job(conn, principal, job_id)
    attempts = await engine.job_attempts(conn, id=job_id)
    parents = await engine.job_parent_ids(conn, id=job_id)
    return JobDetail(
        **msgspec.structs.asdict(job),
        depends_on=parents,
        attempts=attempts,
        output=attempts[-1].output if attempts else None,
    )


async def job_detail_waiting(
    state: State, principal: Principal, job_id: int, seconds: float | None
) -> JobDetail:
    """job_detail; with `seconds`, once the job has ended or that long has passed
    (holding a pooled connection only to read, never while waiting)."""
    waits = waiting(state)
    async with waits.connection() as conn:
        detail = await job_detail(conn, principal, job_id)
    if not seconds or detail.state in JOB_ENDED:
        return detail
    async with waits.slot() as hub:
        await hub.job(job_id, seconds)
    async with waits.connection() as conn:
        return await job_detail(conn, principal, job_id)


async def list_jobs(conn: AsyncConnection, principal: Principal, where: JobFilter) -> list[Job]:
    """Jobs of the caller's tenant (for an admin: of `where.tenant`, or of all), newest
    first."""
    tenant = where.tenant if principal.is_admin and where.tenant else principal.scope
    jobs = await engine.job_list(conn, where=msgspec.structs.replace(where, tenant=tenant))
    return [shown_job(job) for job in jobs]


async def cancel(conn: AsyncConnection, principal: Principal, job_id: int) -> Job:
    """Cancel an unfinished job (and its pending descendants); 409 when it has finished."""
    job = await get_job(conn, principal, job_id)
    if not await engine.job_cancel(conn, ids=[job_id], reason="cancelled"):
        raise Refusal(
            409, f"job {job_id} is already {job.state}; only unfinished jobs can be cancelled"
        )
    return await get_job(conn, principal, job_id)


async def retry(conn: AsyncConnection, principal: Principal, job_id: int) -> Job:
    """Give a failed or cancelled job fresh attempts; 409 when it cannot be retried."""
    job = await get_job(conn, principal, job_id)
    if not await engine.job_retry(conn, ids=[job_id]):
        raise Refusal(
            409,
            f"job {job_id} is {job.state}; only failed or cancelled jobs "
            "whose parents can still succeed can be retried",
        )
    return await get_job(conn, principal, job_id)


async def throughput(
    conn: AsyncConnection, principal: Principal, minutes: int, queue: str | None
) -> list[ThroughputMinute]:
    return await engine.job_throughput(conn, tenant=principal.scope, queue=queue, minutes=minutes)


async def wait_times(
    conn: AsyncConnection, principal: Principal, minutes: int, queue: str | None
) -> WaitTimes:
    waits = await engine.job_wait_times(
        conn, tenant=principal.scope, queue=queue, minutes=minutes, sample=WAIT_SAMPLE
    )
    return WaitTimes(minutes=minutes, overall=waits[0], items=waits[1:])
