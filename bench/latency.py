"""`latency`: how fast an idle worker starts a job after its INSERT commits.

One worker process waits on LISTEN. The client inserts one `bench.stamp` job at
a time (autocommit: the INSERT is its own transaction), at random intervals, and
notes the wall-clock time as soon as the commit returns; the handler answers
the wall-clock time it started. The difference, commit to handler start, is the
wake-up latency: NOTIFY delivery, the claim, and the hand-over to the handler.
Both ends use time.time() on the same machine, the one clock they share.
"""

from __future__ import annotations

import asyncio
import random
import time

from bench import report
from bench.harness import Bench, Record
from bench.workers import WorkerGroup

FULL = {"samples": 1000, "min_gap_ms": 5.0, "max_gap_ms": 25.0}
QUICK = {"samples": 300, "min_gap_ms": 5.0, "max_gap_ms": 25.0}


async def run(bench: Bench, *, samples: int, min_gap_ms: float, max_gap_ms: float) -> Record:
    record = Record("latency")
    record.options = {"samples": samples, "min_gap_ms": min_gap_ms, "max_gap_ms": max_gap_ms}
    rng = random.Random(6)  # noqa: S311 - intervals, not secrets
    committed: dict[int, float] = {}
    async with WorkerGroup(bench.url, count=1, concurrency=10) as group:
        await group.start()
        await asyncio.sleep(0.5)  # past the start-up catch-up claim: the worker is idle
        async with bench.connection() as conn:
            # Warm up the connection and the worker's prepared statements.
            for _ in range(20):
                await conn.execute("INSERT INTO sluice.jobs (task) VALUES ('bench.stamp')")
                await asyncio.sleep(0.01)
            with bench.progress("latency samples", samples) as step:
                for i in range(samples):
                    await asyncio.sleep(rng.uniform(min_gap_ms, max_gap_ms) / 1000)
                    cur = await conn.execute(
                        "INSERT INTO sluice.jobs (task) VALUES ('bench.stamp') RETURNING id"
                    )
                    at = time.time()
                    committed[(await cur.fetchone())[0]] = at
                    if i % 20 == 0:
                        step.update(i)
            started = await wait_results(conn, list(committed))
    latencies = [(started[i] - committed[i]) * 1000 for i in committed]
    for p in (50, 95, 99):
        # On a loaded machine the handler may start before the client process gets
        # to note its commit's return: such a sample reads below zero. Figures are
        # positive; the count of those samples is kept.
        record.figure(
            f"p{p}_ms",
            max(report.percentile(latencies, p), 0.001),
            f"commit to handler start p{p} (ms)",
        )
    record.details["handler_started_before_commit_returned"] = sum(x < 0 for x in latencies)
    record.details["max_ms"] = max(latencies)
    record.details["min_ms"] = min(latencies)
    record.details["latencies_ms"] = [round(x, 3) for x in latencies]
    record.charts["histogram"] = report.histogram(
        f"wake-up latency, {samples} jobs, idle worker", {"commit to handler start": latencies},
        "milliseconds",
    )  # fmt: skip
    return record


async def wait_results(conn, ids: list[int], within: float = 60.0) -> dict[int, float]:
    """The handler start times of `ids`, once all have succeeded."""
    deadline = time.monotonic() + within
    while True:
        cur = await conn.execute(
            "SELECT id, result::text::float8 FROM sluice.jobs"
            " WHERE id = ANY(%s) AND state = 'succeeded'",
            (ids,),
        )
        rows = dict(await cur.fetchall())
        if len(rows) == len(ids):
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - len(rows)} latency jobs did not finish")
        await asyncio.sleep(0.05)
