"""Factories for jobs in a given state, made through the engine's own functions
so every row is one the engine could have produced (a running job has an
attempt, a start time and a lease; a failed one has its dead letter)."""

from __future__ import annotations

import itertools
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

WORKER = "test-worker"
LEASE = "30 seconds"
_lanes = itertools.count()


async def rows(conn: AsyncConnection, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Every row of `sql`, as dicts."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params or None)
        return await cur.fetchall()


async def scalar(conn: AsyncConnection, sql: str, *params: Any) -> Any:
    """The first column of the first row of `sql` (None when there is no row)."""
    cur = await conn.execute(sql, params or None)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def fetch_job(conn: AsyncConnection, job_id: int) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM sluice.jobs WHERE id = %s", (job_id,))
        row = await cur.fetchone()
    assert row is not None, f"job {job_id} does not exist"
    return row


async def insert_job(conn: AsyncConnection, task: str = "noop", **columns: Any) -> int:
    """Insert a job with plain SQL, as another application would."""
    columns = {"task": task, **columns}
    for key in ("payload", "result", "notify"):
        if key in columns and not isinstance(columns[key], Jsonb):
            columns[key] = Jsonb(columns[key])
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    cur = await conn.execute(
        f"INSERT INTO sluice.jobs ({names}) VALUES ({marks}) RETURNING id",  # noqa: S608 - test helper, names are ours
        list(columns.values()),
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def claim(conn: AsyncConnection, job_id: int, worker: str = WORKER) -> dict[str, Any]:
    """Move one ready job to running through job_claim.

    The job is claimed alone from a private queue (so other ready jobs are not
    taken), then given its own queue back.
    """
    queue = (await fetch_job(conn, job_id))["queue"]
    lane = f"lane-{next(_lanes)}"
    await conn.execute("UPDATE sluice.jobs SET queue = %s WHERE id = %s", (lane, job_id))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM sluice.job_claim(%s, %s, 1, %s::interval)", (worker, [lane], LEASE)
        )
        rows = await cur.fetchall()
    await conn.execute("UPDATE sluice.jobs SET queue = %s WHERE id = %s", (queue, job_id))
    assert [r["id"] for r in rows] == [job_id], f"could not claim job {job_id}"
    return {**rows[0], "queue": queue}


async def complete(
    conn: AsyncConnection, job_id: int, result: Any = None, worker: str = WORKER
) -> bool:
    job = await fetch_job(conn, job_id)
    cur = await conn.execute(
        "SELECT * FROM sluice.job_complete_many(%s, %s, %s, %s::jsonb[])",
        (worker, [job_id], [job["attempt"]], [Jsonb(result)]),
    )
    return bool(await cur.fetchall())


async def fail(
    conn: AsyncConnection,
    job_id: int,
    error: str = "boom",
    retryable: bool = True,
    worker: str = WORKER,
) -> dict[str, Any] | None:
    job = await fetch_job(conn, job_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT * FROM sluice.job_fail_many(%s, %s, %s, %s, %s)",
            (worker, [job_id], [job["attempt"]], [error], [retryable]),
        )
        return await cur.fetchone()


async def make_job(conn: AsyncConnection, state: str = "ready", **columns: Any) -> int:
    """A job in `state`, brought there the way the engine would."""
    if state == "scheduled":
        columns.setdefault("run_at", "8999-12-31")  # far ahead (run_at is finite)
    job_id = await insert_job(conn, **columns)
    if state in ("ready", "scheduled"):
        return job_id
    if state == "cancelled":
        await conn.execute("SELECT sluice.cancel_job(%s)", (job_id,))
        return job_id
    await claim(conn, job_id)
    if state == "succeeded":
        assert await complete(conn, job_id)
    elif state == "failed":
        await fail(conn, job_id, retryable=False)
    elif state != "running":
        raise ValueError(f"make_job cannot make a {state} job")
    return job_id
