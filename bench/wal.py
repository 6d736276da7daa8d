"""`wal`: where a job's WAL bytes go, per relation and record type.

`jobs` no-op jobs are inserted (server-side, `INSERT ... SELECT`, 100k per
statement), then drained by `workers` real worker processes x `concurrency`,
as in `drain`. pg_walinspect (contrib) reads every WAL record written during
the enqueue and during the drain, and attributes its bytes to the relation of
its first block reference (`bench.io.wal_breakdown`). Figures: WAL bytes per
job for the enqueue, the drain, and their sum (a job's whole life).

`--checkpoint-between` (the default, as the issue measured it) runs a
CHECKPOINT between the enqueue and the drain: every page the drain touches
first is then written whole into the WAL once (a full-page image), as on any
server whose checkpoint falls while jobs wait. Without it the drain follows the
enqueue within one checkpoint cycle, the best case.
"""

from __future__ import annotations

from bench import io
from bench.harness import Bench, Record
from bench.load import queue_jobs, wait_drained
from bench.workers import WorkerGroup

FULL = {"jobs": 20_000, "workers": 2, "concurrency": 256, "checkpoint_between": True}
QUICK = FULL


async def run(
    bench: Bench, *, jobs: int, workers: int, concurrency: int, checkpoint_between: bool = True
) -> Record:
    record = Record("wal")
    record.options = {
        "jobs": jobs,
        "workers": workers,
        "concurrency": concurrency,
        "checkpoint_between": checkpoint_between,
    }
    async with bench.connection() as conn, io.wal_inspection(conn) as inspectable:
        await conn.execute("CHECKPOINT")
        meter = io.IoMeter(conn)
        # Paused from the start, so the workers find every job queued when they start.
        await conn.execute("SELECT sluice.pause_queue('default')")
        await meter.start()
        await queue_jobs(conn, jobs, analyze=False)
        enqueue = await meter.stop()
        if checkpoint_between:
            await conn.execute("CHECKPOINT")
        async with WorkerGroup(bench.url, count=workers, concurrency=concurrency) as group:
            await group.start()
            with bench.progress(f"wal: drain {jobs:,} jobs", jobs) as step:
                await meter.start()
                await conn.execute("SELECT sluice.resume_queue('default')")
                await wait_drained(conn, group, step, jobs, poll=0.25)
                drain = await meter.stop()
        if inspectable:
            enqueue_rows = await io.wal_breakdown(conn, enqueue.start_lsn, enqueue.end_lsn, jobs)
            drain_rows = await io.wal_breakdown(conn, drain.start_lsn, drain.end_lsn, jobs)
    record.figure("enqueue_bytes_per_job", enqueue.wal_bytes / jobs,
                  "enqueue (INSERT ... SELECT): WAL bytes per job")  # fmt: skip
    record.figure("drain_bytes_per_job", drain.wal_bytes / jobs,
                  f"drain, {workers} x {concurrency}: WAL bytes per job")  # fmt: skip
    record.figure("life_bytes_per_job", (enqueue.wal_bytes + drain.wal_bytes) / jobs,
                  "a job's whole life (enqueue + claim + complete): WAL bytes per job")  # fmt: skip
    record.notes.append(
        "CHECKPOINT between enqueue and drain (full-page images on first touch)"
        if checkpoint_between
        else "no checkpoint between enqueue and drain"
    )
    if not inspectable:
        record.notes.append(
            "no breakdown: pg_walinspect and a replication slot need a superuser on this database"
        )
        return record
    record.details["enqueue"] = enqueue_rows
    record.details["drain"] = drain_rows
    record.details["enqueue_by_relation"] = io.by_relation(enqueue_rows)
    record.details["drain_by_relation"] = io.by_relation(drain_rows)
    record.notes.append("drain, per relation and record:\n\n" + io.markdown_table(drain_rows))
    record.notes.append("enqueue, per relation and record:\n\n" + io.markdown_table(enqueue_rows))
    return record
