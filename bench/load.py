"""Filling the queue fast, and watching it drain without slowing it down."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psycopg

from bench.database import scalar

if TYPE_CHECKING:
    from bench.workers import WorkerGroup

CHUNK = 100_000


async def queue_jobs(
    conn: psycopg.AsyncConnection,
    count: int,
    *,
    task: str = "noop",
    delay: str | None = None,
    analyze: bool = True,
) -> None:
    """Insert `count` jobs of `task` server-side, in statements of 100k (ready, or
    scheduled `delay` from now), then VACUUM ANALYZE so the run starts from fresh
    statistics and a set visibility map."""
    left = count
    while left > 0:
        n = min(left, CHUNK)
        if delay is None:
            await conn.execute(
                "INSERT INTO sluice.jobs (task) SELECT %s FROM generate_series(1, %s)", (task, n)
            )
        else:
            await conn.execute(
                "INSERT INTO sluice.jobs (task, run_at)"
                " SELECT %s, now() + %s::interval FROM generate_series(1, %s)",
                (task, delay, n),
            )
        left -= n
    if analyze:
        await conn.execute("VACUUM ANALYZE sluice.jobs")


async def next_ready_id(conn: psycopg.AsyncConnection) -> int | None:
    """The id of the job the next claim would take from queue `default`: the same
    index scan as a claim, so polling it costs one claim's scan and no more."""
    return await scalar(
        conn,
        "SELECT id FROM sluice.jobs WHERE state = 'ready' AND queue = 'default'"
        " ORDER BY priority, run_at, id LIMIT 1",
    )


async def unfinished(conn: psycopg.AsyncConnection) -> bool:
    """Whether any job is still ready or running (two partial-index probes)."""
    return await scalar(
        conn,
        "SELECT EXISTS (SELECT 1 FROM sluice.jobs WHERE state = 'ready')"
        " OR EXISTS (SELECT 1 FROM sluice.jobs WHERE state = 'running')",
    )


async def wait_drained(
    conn: psycopg.AsyncConnection,
    group: WorkerGroup,
    step: Any,
    total: int,
    *,
    start: int | None = None,
    poll: float = 0.1,
) -> None:
    """Wait until no job is ready or running, showing on `step` how far the claims
    are past job `start` (default: the head of the queue now). Raises if every
    worker of `group` has exited, since the jobs would then never drain."""
    first = start if start is not None else await next_ready_id(conn) or 0
    while True:
        head = await next_ready_id(conn)
        if head is None and not await unfinished(conn):
            step.update(total)
            return
        if head is not None:
            step.update(min(head - first, total))
        if not group.alive():
            raise RuntimeError("every worker process exited before the queue drained")
        await asyncio.sleep(poll)


async def completion_series(
    conn: psycopg.AsyncConnection, bucket: float, since_id: int = 0
) -> tuple[float, float, list[list[float]]]:
    """(first claim, last completion, [[seconds, jobs/s], ...]) of succeeded jobs with
    id > since_id, in epoch seconds of the server clock."""
    cur = await conn.execute(
        "SELECT extract(epoch FROM min(started_at))::float8,"
        " extract(epoch FROM max(finished_at))::float8"
        " FROM sluice.jobs WHERE state = 'succeeded' AND id > %s",
        (since_id,),
    )
    first, last = await cur.fetchone()
    cur = await conn.execute(
        "SELECT floor((extract(epoch FROM finished_at) - %s) / %s)::int AS b, count(*)"
        " FROM sluice.jobs WHERE state = 'succeeded' AND id > %s GROUP BY b ORDER BY b",
        (first, bucket, since_id),
    )
    counts = dict(await cur.fetchall())
    series = [
        [round(b * bucket, 3), round(counts.get(b, 0) / bucket, 1)]
        for b in range(0, max(counts) + 1 if counts else 0)
    ]
    return first, last, series
