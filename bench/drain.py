"""`drain`: N no-op jobs queued first, then W worker processes x C concurrency.

Throughput is N over the time from the first claim to the last completion, both
read from the jobs themselves (started_at, finished_at: the server's clock), so
process start-up is not counted and polling adds nothing to the measurement.
Each queue size given (`--jobs 20000,200000`) is drained in turn, from an empty
table, and gets its own figures, suffixed with the size (`jobs_per_s_20k`):
jobs/s, CPU per job (workers and server), WAL bytes per job and buffers
written per job over the drain, and buffers written per job by the checkpoint
right after it (the pages the drain dirtied that a server writes out at its
next checkpoint whatever its settings).

Start-up is measured on its own: a fresh worker process is started with one
job ready, and the time from its spawn to that job's claim (`started_at`) is
the worker's start-up to first claim (median of 3), with sluice byte-compiled
first, as an installed worker is.
"""

from __future__ import annotations

import asyncio
import compileall
import statistics
import time

from bench import io, report
from bench.cpu import cpu_seconds
from bench.database import reset, scalar
from bench.harness import ROOT, Bench, Record
from bench.load import completion_series, queue_jobs, wait_drained
from bench.workers import WorkerGroup

FULL = {"jobs": "20000,200000", "workers": 2, "concurrency": 256}
QUICK = {"jobs": "20000,50000", "workers": 2, "concurrency": 256}
STARTUP_SAMPLES = 3


def size_label(n: int) -> str:
    """20000 -> "20k": the suffix of a queue size's figures."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


async def drain_once(bench: Bench, record: Record, jobs: int, workers: int, concurrency: int):
    """Queue `jobs`, drain them, and add this size's figures to `record`."""
    suffix = f"_{size_label(jobs)}"
    what = f"drain of {jobs:,}"
    meter = await bench.cpu_meter()
    async with bench.connection() as conn:
        await queue_jobs(conn, jobs)
        await conn.execute("CHECKPOINT")
        # Paused while the workers start, so start-up is neither timed nor in the CPU figures.
        await conn.execute("SELECT sluice.pause_queue('default')")
        io_meter = io.IoMeter(conn)
        async with WorkerGroup(bench.url, count=workers, concurrency=concurrency) as group:
            await group.start()
            with bench.progress(f"drain {jobs:,} jobs", jobs) as step:
                meter.start()
                idle = cpu_seconds(p.pid for p in group.procs)
                await io_meter.start()
                await conn.execute("SELECT sluice.resume_queue('default')")
                await wait_drained(conn, group, step, jobs, poll=0.25)
                span = await io_meter.stop()
                cpu = meter.stop(p.pid for p in group.procs)
        # Not timed: what the checkpointer then writes of the pages the drain dirtied.
        span.checkpoint_buffers = await io.checkpoint_buffers(conn)
        first, last, series = await completion_series(conn, 0.25)
    cpu["workers_s"] -= sum(idle.values())
    seconds = last - first
    record.figure(f"jobs_per_s{suffix}", jobs / seconds,
                  f"{what}, {workers} x {concurrency} (jobs/s)")  # fmt: skip
    record.figure(f"seconds{suffix}", seconds, f"{what}: first claim to last completion (s)")
    record.figure(f"worker_cpu_us_per_job{suffix}", cpu["workers_s"] / jobs * 1e6,
                  f"{what}: worker processes' CPU per job (µs)")  # fmt: skip
    if cpu["postgres_s"] is not None:
        record.figure(f"postgres_cpu_us_per_job{suffix}", cpu["postgres_s"] / jobs * 1e6,
                      f"{what}: PostgreSQL's CPU per job (µs)")  # fmt: skip
    io.record_figures(record, span, jobs, what, suffix=suffix)
    record.details[f"throughput{suffix}"] = series
    record.charts[f"throughput{suffix}"] = report.line_chart(
        f"drain: {jobs:,} no-op jobs, {workers} worker processes x {concurrency}",
        {"completions": series},
        "seconds since the first claim",
        "jobs/s (250 ms buckets)",
    )


async def startup_ms(bench: Bench) -> list[float]:
    """Spawn to first claim of a fresh worker process with one job ready, in ms."""
    # Byte-compiled first, as installing sluice leaves it: with
    # PYTHONDONTWRITEBYTECODE set, every worker started from the checkout would
    # compile sluice's modules anew (45-100 ms of CPU no installed worker pays),
    # and the bench's task modules (bench.tasks, as a user's installed tasks are).
    for package in ("app", "worker", "sql", "migrations", "bench"):
        compileall.compile_dir(ROOT / package, quiet=1)
    samples = []
    async with bench.connection() as conn:
        for _ in range(STARTUP_SAMPLES):
            job = await scalar(conn, "INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id")
            async with WorkerGroup(bench.url, count=1, concurrency=10) as group:
                spawned = time.time()
                group.spawn()
                deadline = time.monotonic() + 60
                while True:
                    started = await scalar(
                        conn,
                        "SELECT extract(epoch FROM started_at)::float8 FROM sluice.jobs"
                        " WHERE id = %s",
                        (job,),
                    )
                    if started is not None:
                        break
                    if not group.alive() or time.monotonic() > deadline:
                        raise RuntimeError("the worker did not claim its first job")
                    await asyncio.sleep(0.01)
            samples.append((started - spawned) * 1000)
    return samples


async def run(bench: Bench, *, jobs: str | int, workers: int, concurrency: int) -> Record:
    sizes = [int(x) for x in str(jobs).split(",")]
    record = Record("drain")
    record.options = {"jobs": sizes, "workers": workers, "concurrency": concurrency}
    for i, size in enumerate(sizes):
        if i:
            async with bench.connection() as conn:
                await reset(conn)
        await drain_once(bench, record, size, workers, concurrency)
    samples = await startup_ms(bench)
    record.figure("startup_ms", statistics.median(samples),
                  f"worker start-up to its first claim, median of {len(samples)} (ms)")  # fmt: skip
    record.details["startup_ms"] = [round(x, 1) for x in samples]
    return record
