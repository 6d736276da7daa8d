"""`drain`: N no-op jobs queued first, then W worker processes x C concurrency.

Throughput is N over the time from the first claim to the last completion, both
read from the jobs themselves (started_at, finished_at: the server's clock), so
process start-up is not counted and polling adds nothing to the measurement.
"""

from __future__ import annotations

from bench import report
from bench.cpu import cpu_seconds
from bench.harness import Bench, Record
from bench.load import completion_series, queue_jobs, wait_drained
from bench.workers import WorkerGroup

FULL = {"jobs": 200_000, "workers": 2, "concurrency": 256}
QUICK = {"jobs": 50_000, "workers": 2, "concurrency": 256}


async def run(bench: Bench, *, jobs: int, workers: int, concurrency: int) -> Record:
    record = Record("drain")
    record.options = {"jobs": jobs, "workers": workers, "concurrency": concurrency}
    meter = await bench.cpu_meter()
    async with bench.connection() as conn:
        await queue_jobs(conn, jobs)
        await conn.execute("CHECKPOINT")
        # Paused while the workers start, so start-up is neither timed nor in the CPU figures.
        await conn.execute("SELECT sluice.pause_queue('default')")
        async with WorkerGroup(bench.url, count=workers, concurrency=concurrency) as group:
            await group.start()
            with bench.progress(f"drain {jobs:,} jobs", jobs) as step:
                meter.start()
                idle = cpu_seconds(p.pid for p in group.procs)
                await conn.execute("SELECT sluice.resume_queue('default')")
                await wait_drained(conn, group, step, jobs, poll=0.25)
                cpu = meter.stop(p.pid for p in group.procs)
    cpu["workers_s"] -= sum(idle.values())
    async with bench.connection() as conn:
        first, last, series = await completion_series(conn, 0.25)
    span = last - first
    record.figure("jobs_per_s", jobs / span, f"drain, {workers} x {concurrency} (jobs/s)")
    record.figure("seconds", span, "first claim to last completion (s)")
    record.figure(
        "worker_cpu_us_per_job", cpu["workers_s"] / jobs * 1e6, "worker processes' CPU per job (µs)"
    )
    if cpu["postgres_s"] is not None:
        record.figure(
            "postgres_cpu_us_per_job",
            cpu["postgres_s"] / jobs * 1e6,
            "PostgreSQL's CPU per job (µs)",
        )
    record.details["throughput"] = series
    record.charts["throughput"] = report.line_chart(
        f"drain: {jobs:,} no-op jobs, {workers} worker processes x {concurrency}",
        {"completions": series},
        "seconds since the first claim",
        "jobs/s (250 ms buckets)",
    )
    return record
