"""Submitting jobs: validate every job, then insert them all in one statement.

One job and ten thousand take the same path (job_submit_many), so the rules
(idempotency, dependencies, permissions) cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import msgspec
from psycopg import AsyncConnection

from sluice.auth import Principal, require_shell_permission
from sluice.core.metrics import JOBS_ENQUEUED
from sluice.core.queries import Q
from sluice.core.tasks import TaskCatalog
from sluice.errors import ApiError, FieldError, invalid
from sluice.jobs.schemas import JobSubmit, JobTemplate
from sluice.resources import notify_json, nul_problems


@dataclass(frozen=True)
class Submitted:
    id: int
    created: bool


def fingerprint(job: JobSubmit) -> str:
    """A digest of everything the request asked for, to tell a replay from a reuse."""
    return hashlib.sha256(msgspec.json.encode(job, order="sorted")).hexdigest()


def template_problems(job: JobTemplate, catalog: TaskCatalog, where: str) -> list[tuple[str, str]]:
    """Every problem with what a job runs that its schema cannot express."""
    prefix = f"{where}." if where else ""
    found = catalog.problems(job.task, job.payload, where)
    found += nul_problems(job.payload, prefix + "payload")
    if job.backoff_max < job.backoff_base:
        found.append((prefix + "backoff_max", "must be at least backoff_base"))
    return found


def job_problems(job: JobSubmit, catalog: TaskCatalog, where: str) -> list[tuple[str, str]]:
    """Every problem with one job that its schema cannot express."""
    found = template_problems(job, catalog, where)
    if job.run_at is not None and job.delay_seconds is not None:
        prefix = f"{where}." if where else ""
        found.append((prefix + "delay_seconds", "give run_at or delay_seconds, not both"))
    return found


def check(
    jobs: Sequence[JobSubmit], principal: Principal, catalog: TaskCatalog, where: str | None
) -> None:
    """Raise 403 or 422 unless every job may be submitted by `principal`."""
    require_shell_permission((job.task for job in jobs), principal)
    found: list[tuple[str, str]] = []
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


async def submit(
    conn: AsyncConnection,
    principal: Principal,
    jobs: Sequence[JobSubmit],
    catalog: TaskCatalog,
    *,
    where: str | None = None,
) -> list[Submitted]:
    """Insert `jobs` for the caller's tenant in one transaction; answer their ids in order.

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
    # One job without parents is one INSERT, atomic on its own: skip BEGIN and
    # COMMIT, two of the four round trips of a single submission.
    alone = len(jobs) == 1 and not parents
    async with nullcontext() if alone else conn.transaction():
        if parents:
            visible = {r["id"] for r in await Q.job_ids_visible(conn, ids=parents, tenant=tenant)}
            missing = [
                (f"{_at(where, i)}depends_on[{k}]", f"job {p} does not exist")
                for i, job in enumerate(jobs)
                for k, p in enumerate(job.depends_on)
                if p not in visible
            ]
            if missing:
                raise invalid(missing)
        inserted = await Q.job_submit_many(
            conn, jobs=msgspec.json.encode(rows).decode(), tenant=tenant
        )
        result = _pair(jobs, inserted)
        await _check_replays(conn, tenant, jobs, result, where)
        edges = [
            (p, s.id)
            for job, s in zip(jobs, result, strict=True)
            if s.created
            for p in job.depends_on
        ]
        if edges:
            await Q.job_edges_add(
                conn, parents=[p for p, _ in edges], children=[c for _, c in edges]
            )
    for (queue, task), n in Counter(
        (j.queue, j.task) for j, s in zip(jobs, result, strict=True) if s.created
    ).items():
        JOBS_ENQUEUED.labels(queue=queue, task=task).inc(n)
    return result


def _at(where: str | None, i: int) -> str:
    return "" if where is None else f"{where}[{i}]."


def _pair(jobs: Sequence[JobSubmit], inserted: list[dict]) -> list[Submitted]:
    """Match inserted rows (in input order, skipped ones missing) to the input jobs."""
    created_keys = {r["idempotency_key"] for r in inserted if r["idempotency_key"] is not None}
    rows = iter(inserted)
    result: list[Submitted] = []
    for job in jobs:
        key = job.idempotency_key
        if key is not None and key not in created_keys:
            result.append(Submitted(0, False))  # an existing job; its id is looked up next
            continue
        row = next(rows)
        assert row["idempotency_key"] == key, "inserted rows came back out of input order"
        result.append(Submitted(row["id"], True))
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
        r["idempotency_key"]: r
        for r in await Q.job_by_idempotency_keys(conn, tenant=tenant, keys=keys)
    }
    conflicts: list[FieldError] = []
    for i in replayed:
        job = jobs[i]
        row = existing.get(job.idempotency_key)
        if row is None:  # pruned in between: the client may simply try again
            raise ApiError(409, "The job holding this idempotency key just went away; retry.")
        # Jobs enqueued by plain SQL have no fingerprint: a replay cannot be told apart.
        if row["request_fingerprint"] not in (None, fingerprint(job)):
            conflicts.append(
                FieldError(
                    f"{_at(where, i)}idempotency_key", "was used before for a different request"
                )
            )
        result[i] = Submitted(row["id"], False)
    if conflicts:
        raise ApiError(409, "An idempotency key was reused with a different request.", conflicts)
