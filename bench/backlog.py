"""`backlog`: does claiming slow down when many jobs wait?

The queue is filled to each level of ready jobs in turn (10k, 100k, 1M by
default), with 1M more `scheduled` an hour ahead the whole time. At each level
a sample of jobs is claimed and completed through the engine's own functions
(sluice.job_claim, sluice.job_complete_many: what a worker calls), 100 per
call, from two connections, with the level topped up first so the sample is
taken with the level waiting. The ratio of the largest level's throughput to
the smallest's says whether claiming stays O(log n).

At the largest level the admin views (queue_stats, dag_run_progress,
throughput, ...) are timed too, after a few DAG runs and some finished jobs
have been added so they have something to show.

With `kept` (10M in the full run), that many finished jobs are then written
into history (what as many completions leave there, without running them),
with the smallest level measured right before and after: the claim path's
table should not grow with them, nor the claims slow down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

from bench.database import relation_sizes, scalar
from bench.harness import Bench, Record
from bench.load import CHUNK, queue_jobs
from sluice.core import protocol

FULL = {
    "levels": "10000,100000,1000000",
    "scheduled": 1_000_000,
    "sample": 30_000,
    "kept": 10_000_000,
}
QUICK = {"levels": "10000,100000,300000", "scheduled": 300_000, "sample": 20_000, "kept": 1_000_000}

BATCH = 100
CLIENTS = 2
ROUNDS = 3
TWO_NODES = json.dumps(
    {"nodes": [{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": ["a"]}]}
)
VIEWS = (
    "queue_stats",
    "dag_run_progress",
    "throughput",
    "worker_status",
    "running_jobs",
    "stuck_jobs",
    "dead_letter_queue",
    "leases",
)


async def claim_complete(bench: Bench, jobs: int) -> tuple[float, float]:
    """Claim and complete `jobs` jobs, BATCH at a time on CLIENTS connections.
    Answers (jobs/s, server-side claim microseconds per job as the client saw it)."""
    lease = dt.timedelta(seconds=60)
    claim_time = [0.0]

    async def client(n: int) -> None:
        async with bench.connection() as conn:
            worker = f"bench-backlog-{id(conn)}"
            while n > 0:
                t = time.perf_counter()
                jobs = await protocol.job_claim(
                    conn, worker_id=worker, queues=["default"], limit=min(BATCH, n), lease=lease
                )
                claim_time[0] += time.perf_counter() - t
                if not jobs:
                    raise RuntimeError("the backlog ran dry")
                await protocol.job_complete_many(
                    conn, worker_id=worker, outcomes=[protocol.Succeeded(j, None) for j in jobs]
                )
                n -= len(jobs)

    began = time.perf_counter()
    await asyncio.gather(*(client(jobs // CLIENTS) for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - began
    done = jobs // CLIENTS * CLIENTS
    return done / elapsed, claim_time[0] / done * 1e6


async def time_views(conn) -> dict[str, float]:
    """Milliseconds to read each admin view in full, best of 3."""
    timings = {}
    for view in VIEWS:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            cur = await conn.execute(f"SELECT * FROM sluice.{view}")  # noqa: S608 - constant names
            await cur.fetchall()
            best = min(best, time.perf_counter() - t)
        timings[view] = round(best * 1000, 2)
    return timings


async def measure_level(bench: Bench, conn, level: int, sample: int) -> dict[str, float]:
    """Claim + complete `sample` jobs with `level` ready, best of ROUNDS (the machine
    is shared, and autovacuum may run in one)."""
    rounds = []
    for _ in range(ROUNDS):
        ready = await scalar(conn, "SELECT count(*) FROM sluice.jobs WHERE state = 'ready'")
        await queue_jobs(conn, level + sample // ROUNDS - ready)
        await conn.execute("CHECKPOINT")
        rounds.append(await claim_complete(bench, sample // ROUNDS))
    rate, claim_us = max(rounds)
    return {
        "jobs_per_s": round(rate, 1),
        "claim_us_per_job": round(claim_us, 2),
        "rounds_jobs_per_s": [round(r[0], 1) for r in rounds],
    }


async def keep_finished(conn, count: int) -> None:
    """`count` succeeded jobs written straight into today's history partition, in
    statements of CHUNK, then vacuumed (as autovacuum would, before the claims)."""
    left = count
    while left > 0:
        n = min(left, CHUNK)
        await conn.execute(
            "INSERT INTO sluice.jobs (task, state, attempt, started_at, finished_at, archived_at)"
            " SELECT 'noop', 'succeeded', 1, now(), now(), now() FROM generate_series(1, %s)",
            (n,),
        )
        left -= n
    await conn.execute("VACUUM ANALYZE sluice.jobs")


LIVE = ("jobs_live", "jobs_pkey", "jobs_ready", "jobs_scheduled", "jobs_running", "jobs_waiting")


def _claim_path_bytes(sizes: dict[str, int]) -> int:
    """The live partition and its indexes: what claims read."""
    return sum(size for name, size in sizes.items() if name.startswith(LIVE))


async def run(bench: Bench, *, levels: str, scheduled: int, sample: int, kept: int = 0) -> Record:
    sizes = sorted(int(x) for x in str(levels).split(","))
    record = Record("backlog")
    record.options = {"levels": sizes, "scheduled": scheduled, "sample": sample, "kept": kept}
    per_level: dict[int, dict[str, float]] = {}
    async with bench.connection() as conn:
        with bench.progress("backlog: loading scheduled jobs", 1):
            await queue_jobs(conn, scheduled, delay="1 hour", analyze=False)
        with bench.progress("backlog levels", len(sizes)) as step:
            for i, level in enumerate(sizes):
                per_level[level] = await measure_level(bench, conn, level, sample)
                step.update(i + 1)
        if kept:
            with bench.progress(f"backlog: {kept:,} finished jobs kept", 1):
                # Measured again right before the kept jobs, not taken from the first
                # level: the larger levels since have churned the live partition (in
                # the full run to twice its size), and only the kept jobs may differ
                # between the two figures of the ratio.
                without = await measure_level(bench, conn, sizes[0], sample)
                before = _claim_path_bytes(await relation_sizes(conn))
                await keep_finished(conn, kept)
                again = await measure_level(bench, conn, sizes[0], sample)
                after = _claim_path_bytes(await relation_sizes(conn))
            record.figure(
                "kept_jobs_per_s",
                again["jobs_per_s"],
                f"claim + complete, {sizes[0]:,} waiting, {kept:,} kept (jobs/s)",
            )
            record.figure(
                "kept_ratio",
                again["jobs_per_s"] / without["jobs_per_s"],
                f"ratio with {kept:,} finished jobs kept / without them",
            )
            record.figure(
                "claim_path_mb_before_kept",
                before / 2**20,
                "the live partition and its indexes, before the kept jobs (MB)",
            )
            record.figure("claim_path_mb_after_kept", after / 2**20,
                          "the live partition and its indexes, after them (MB)")  # fmt: skip
            record.details["kept_level"] = again
            record.details["kept_level_without"] = without
        # Something for the views to show: DAG runs, finished and failed jobs.
        for _ in range(20):
            await conn.execute("SELECT sluice.dag_run_create('default', %s::jsonb)", (TWO_NODES,))
        await conn.execute("VACUUM ANALYZE sluice.jobs")
        views = await time_views(conn)
        total = await scalar(conn, "SELECT count(*) FROM sluice.jobs")
    smallest, largest = per_level[sizes[0]]["jobs_per_s"], per_level[sizes[-1]]["jobs_per_s"]
    record.figure(
        "smallest_jobs_per_s", smallest, f"claim + complete, {sizes[0]:,} waiting (jobs/s)"
    )
    record.figure(
        "largest_jobs_per_s", largest, f"claim + complete, {sizes[-1]:,} waiting (jobs/s)"
    )
    record.figure("ratio", largest / smallest, f"ratio {sizes[-1]:,} / {sizes[0]:,} waiting")
    for view, ms in views.items():
        record.figure(f"view_{view}_ms", max(ms, 0.01), f"sluice.{view}, read in full (ms)")
    record.details["levels"] = per_level
    record.details["views_ms"] = views
    record.details["jobs_in_table_for_views"] = total
    record.notes.append(
        f"{CLIENTS} connections calling sluice.job_claim / job_complete_many, "
        f"{BATCH} jobs per call; "
        f"{scheduled:,} jobs scheduled an hour ahead throughout; views timed with {total:,} jobs"
    )
    return record
