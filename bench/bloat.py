"""`bloat`: throughput while another session holds a transaction open.

An open transaction's snapshot keeps every row version it might see: vacuum
cannot remove the versions claims and completions leave behind, and a claim's
index scan must step over them. Three phases, with the same workers running
throughout:

1. normal: `normal_jobs` drained with nothing else open (the baseline rate);
2. held: `jobs` drained while another session sits idle in a REPEATABLE READ
   transaction that has read from sluice.jobs;
3. recovery: the transaction ends and `recovery_jobs` more are drained; the
   recovery time is from its end to the first second whose throughput is back
   to 90 % of normal.

Table and index sizes are read before phase 2, at its end (still held) and
after phase 3.
"""

from __future__ import annotations

import asyncio
import time

from bench import report
from bench.database import relation_sizes, scalar
from bench.harness import Bench, Record
from bench.load import completion_series, next_ready_id, queue_jobs, wait_drained
from bench.workers import WorkerGroup

FULL = {"jobs": 200_000, "normal_jobs": 100_000, "recovery_jobs": 300_000, "workers": 2,
        "concurrency": 256}  # fmt: skip
QUICK = {"jobs": 100_000, "normal_jobs": 50_000, "recovery_jobs": 150_000, "workers": 2,
         "concurrency": 256}  # fmt: skip
BUCKET = 1.0
RECOVERED = 0.9


async def run(
    bench: Bench, *, jobs: int, normal_jobs: int, recovery_jobs: int, workers: int, concurrency: int
) -> Record:
    record = Record("bloat")
    record.options = {"jobs": jobs, "normal_jobs": normal_jobs, "recovery_jobs": recovery_jobs,
                      "workers": workers, "concurrency": concurrency}  # fmt: skip
    sizes: dict[str, dict[str, int]] = {}
    async with bench.connection() as conn, bench.connection() as holder:
        async with WorkerGroup(bench.url, count=workers, concurrency=concurrency) as group:
            await group.start()
            # 1. normal
            with bench.progress("bloat: normal", normal_jobs) as step:
                await queue_jobs(conn, normal_jobs, analyze=False)
                await wait_drained(conn, group, step, normal_jobs)
            first, last, normal_series = await completion_series(conn, BUCKET)
            normal = normal_jobs / (last - first)
            boundary = await scalar(conn, "SELECT max(id) FROM sluice.jobs")

            # 2. held: the queue is paused while it fills, so the clock starts at resume.
            await conn.execute("SELECT sluice.pause_queue('default')")
            await queue_jobs(conn, jobs, analyze=False)
            await queue_jobs(conn, recovery_jobs)
            await conn.execute("CHECKPOINT")
            sizes["before"] = await relation_sizes(conn)
            await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            await holder.execute("SELECT count(*) FROM sluice.queues")
            await conn.execute("SELECT sluice.resume_queue('default')")
            held_from = time.time()
            with bench.progress("bloat: transaction held open", jobs) as step:
                start_id = boundary + 1
                while True:
                    head = await next_ready_id(conn)
                    done = (head or start_id + jobs) - start_id
                    step.update(min(done, jobs))
                    if done >= jobs:
                        break
                    await asyncio.sleep(0.1)
            sizes["during"] = await relation_sizes(conn)
            await holder.execute("COMMIT")
            held_until = time.time()
            # 3. recovery
            with bench.progress("bloat: after it ends", recovery_jobs) as step:
                await wait_drained(conn, group, step, recovery_jobs, start=start_id + jobs)
            sizes["after"] = await relation_sizes(conn)
        first, last, series = await completion_series(conn, BUCKET, since_id=boundary)
        held_done = await scalar(
            conn,
            "SELECT count(*) FROM sluice.jobs WHERE id > %s AND state = 'succeeded'"
            " AND finished_at <= to_timestamp(%s)",
            (boundary, held_until),
        )
    # Seconds of the series relative to the transaction.
    opened_at, ended_at = held_from - first, held_until - first
    during = held_done / (held_until - held_from)
    recovery = None
    for t, rate in series:
        if t >= ended_at and rate >= RECOVERED * normal:
            recovery = max(0.0, t - ended_at)
            break
    record.figure("normal_jobs_per_s", normal, "normal throughput (jobs/s)")
    record.figure("during_jobs_per_s", during, "throughput with the transaction open (jobs/s)")
    record.figure("during_fraction", during / normal, "with the transaction open / normal")
    if recovery is None:
        record.checks["recovered"] = 0
        record.notes.append(
            f"throughput did not return to {RECOVERED:.0%} of normal before the jobs ran out "
            f"({last - held_until:.1f} s after the transaction ended)"
        )
    else:
        record.checks["recovered"] = 1
        record.figure("recovery_s", max(recovery, 0.001),
                      f"back to {RECOVERED:.0%} of normal after it ended (s)")  # fmt: skip
    for phase in ("before", "during", "after"):
        record.figure(f"jobs_table_mb_{phase}", sizes[phase]["jobs"] / 2**20,
                      f"sluice.jobs heap {phase} (MB)")  # fmt: skip
        record.figure(f"jobs_ready_mb_{phase}", max(sizes[phase]["jobs_ready"], 8192) / 2**20,
                      f"jobs_ready index {phase} (MB)")  # fmt: skip
    record.details["sizes_bytes"] = sizes
    record.details["throughput"] = series
    record.details["normal_throughput"] = normal_series
    record.details["held_seconds"] = [round(opened_at, 3), round(ended_at, 3)]
    record.charts["throughput"] = _chart(series, normal, opened_at, ended_at)
    return record


def _chart(series, normal: float, opened: float, ended: float):
    line = report.line_chart(
        "bloat: throughput with a transaction held open",
        {"completions": series},
        "seconds",
        "jobs/s (1 s buckets)",
    )

    def draw(figure) -> None:
        line(figure)
        ax = figure.axes[0]
        ax.axvspan(opened, ended, color="tab:red", alpha=0.1, label="transaction open")
        ax.axhline(normal, color="tab:green", linestyle="--", label="normal")
        ax.legend()

    return draw
