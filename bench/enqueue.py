"""`enqueue`: jobs/s inserted, four ways.

(a) plain SQL, one `INSERT INTO sluice.jobs` per transaction, from concurrent
    clients (each commit waits for its WAL flush: group commit is what helps);
(b) the batch path: COPY into sluice.jobs, 10,000 rows per transaction; and the
    API's own set-based insert (job_submit_many, its fields as JSON columns) beside it;
(c) REST: POST /api/v1/jobs, one job per request, from concurrent clients;
(d) REST: POST /api/v1/jobs/batch, 1,000 jobs per request;
(e) the Python API, `task.enqueue(conn)`, one job per transaction, as (a);
(f) the Python API, `task.enqueue_many(conn, [...])`, 10,000 per transaction, as (b).
Every job is a no-op in queue `default`; nothing consumes them. (e) and (f) go
through a task declared with `@sluice.task`'s machinery (typed: its payload is
checked at the door) and the engine's SQL (for (e), sluice.enqueue's INSERT
without the function around it, job_insert; for (f), the ids reserved by
sluice.reserve_job_ids, then COPY).

After the first pass over every way, `rounds` - 1 more rounds run (a), (e), (b)
and (f) again, in that order: on a shared machine the load drifts, and only a
Python path measured right after its SQL path compares with it. A rate figure
is the median of its rounds, the ratios the medians of each round's ratio; the
CPU and WAL figures are per job over all rounds. `details.rounds` has each
round's figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time

from bench import io
from bench.api import api_process
from bench.cpu import CpuMeter
from bench.harness import Bench, Record
from sluice.core import engine
from sluice.core.enqueueing import declare
from sluice.core.jobs import JOB_DEFAULTS  # what the API fills in for a job's missing fields


def _noop() -> None:
    """The no-op task as the Python API sees it: no fields (its payload is `{}`)."""


# Declared, not registered with a worker: the enqueue side of `@sluice.task`.
NOOP = declare(_noop, name="noop")

COPY_BATCH = 10_000
REST_BATCH = 1_000

FULL = {
    "single_jobs": 20_000,
    "batched_jobs": 500_000,
    "rest_jobs": 5_000,
    "rest_batched_jobs": 200_000,
    "clients": 16,
    "rounds": 3,
}
QUICK = {
    "single_jobs": 5_000,
    "batched_jobs": 200_000,
    "rest_jobs": 2_000,
    "rest_batched_jobs": 50_000,
    "clients": 16,
    "rounds": 3,
}


async def _spread(total: int, clients: int, one: callable) -> float:
    """Run `one(n)` on `clients` concurrent workers sharing `total`; answers the seconds."""
    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    began = time.perf_counter()
    await asyncio.gather(*(one(n) for n in shares if n))
    return time.perf_counter() - began


class _Meter:
    """What one way costs: the client's CPU, the server's CPU and WAL, read while
    the way's connections are open (a backend's CPU drops out of the count
    between its exit and the postmaster reaping it)."""

    def __init__(self, io_meter: io.IoMeter, cpu_meter: CpuMeter) -> None:
        self.io_meter = io_meter
        self.cpu_meter = cpu_meter
        self._client = 0.0
        self.client_s = 0.0
        self.server_s: float | None = None
        self.span: io.IoSpan | None = None

    async def start(self) -> None:
        self.cpu_meter.start()
        await self.io_meter.start()
        self._client = time.process_time()

    async def stop(self) -> None:
        self.client_s = time.process_time() - self._client
        self.span = await self.io_meter.stop()
        self.server_s = self.cpu_meter.stop([])["postgres_s"]


async def _on_connections(
    bench: Bench, total: int, connections: int, one: callable, meter: _Meter | None = None
) -> float:
    """Run `one(conn, n)` on `connections` new connections at once, sharing `total`
    jobs between them; answers the seconds (metered, if given, in between)."""
    conns = [await bench.connect() for _ in range(connections)]
    try:
        it = iter(conns)
        if meter is not None:
            await meter.start()
        seconds = await _spread(total, connections, lambda n: one(next(it), n))
        if meter is not None:
            await meter.stop()
        return seconds
    finally:
        for conn in conns:
            await conn.close()


async def _in_batches(n: int, insert: callable) -> None:
    """`insert(size)` for batches of COPY_BATCH jobs (the last one smaller) making n."""
    while n > 0:
        size = min(n, COPY_BATCH)
        await insert(size)
        n -= size


async def sql_single(bench: Bench, total: int, clients: int, meter: _Meter | None = None) -> float:
    async def one(conn, n: int) -> None:
        for _ in range(n):
            await conn.execute("INSERT INTO sluice.jobs (task, payload) VALUES ('noop', '{}')")

    return await _on_connections(bench, total, clients, one, meter)


async def copy_batches(
    bench: Bench, total: int, connections: int = 2, meter: _Meter | None = None
) -> float:
    """COPY in transactions of COPY_BATCH rows, from `connections` connections at once."""
    rows = b"noop\t{}\n" * COPY_BATCH

    async def one(conn, n: int) -> None:
        async def insert(size: int) -> None:
            async with (
                conn.transaction(),
                conn.cursor().copy("COPY sluice.jobs (task, payload) FROM STDIN") as copy,
            ):
                await copy.write(rows if size == COPY_BATCH else rows[: size * 8])

        await _in_batches(n, insert)

    return await _on_connections(bench, total, connections, one, meter)


async def submit_many(
    bench: Bench, total: int, connections: int = 2, meter: _Meter | None = None
) -> float:
    """The API's SQL (job_submit_many), COPY_BATCH jobs per statement."""

    async def one(conn, n: int) -> None:
        async def insert(size: int) -> None:
            # What the API passes: every field of every job, defaults filled in.
            jobs = [{"task": "noop", "payload": {}} | dataclasses.asdict(JOB_DEFAULTS)] * size
            await engine.job_submit_many(conn, jobs=jobs, tenant="default")

        await _in_batches(n, insert)

    return await _on_connections(bench, total, connections, one, meter)


async def python_single(
    bench: Bench, total: int, clients: int, meter: _Meter | None = None
) -> float:
    """(e): NOOP.enqueue(conn), each in its own transaction (autocommit), as (a)."""

    async def one(conn, n: int) -> None:
        for _ in range(n):
            await NOOP.enqueue(conn)

    return await _on_connections(bench, total, clients, one, meter)


async def python_batches(
    bench: Bench, total: int, connections: int = 2, meter: _Meter | None = None
) -> float:
    """(f): NOOP.enqueue_many(conn, ...), COPY_BATCH jobs per transaction, as (b)."""

    async def one(conn, n: int) -> None:
        async def insert(size: int) -> None:
            await NOOP.enqueue_many(conn, [{}] * size)

        await _in_batches(n, insert)

    return await _on_connections(bench, total, connections, one, meter)


async def rest(bench: Bench, single: int, batched: int, clients: int) -> tuple[float, float]:
    async with api_process(bench.url) as client:

        async def singles(n: int) -> None:
            for _ in range(n):
                response = await client.post("/api/v1/jobs", json={"task": "noop"})
                response.raise_for_status()

        # Warm up: connections, prepared statements, the app's first-request work.
        await _spread(min(200, single), min(clients, 8), singles)
        single_s = await _spread(single, clients, singles)
        body = {"jobs": [{"task": "noop"}] * REST_BATCH}

        async def batches(n: int) -> None:
            for _ in range(0, n, REST_BATCH):
                response = await client.post("/api/v1/jobs/batch", json=body)
                response.raise_for_status()

        batched_s = await _spread(batched // REST_BATCH * REST_BATCH, 4, batches)
    return single_s, batched_s


# The Python paths and the SQL each is compared with: the ways rerun in later rounds.
RATIOS = (
    ("e_python_single", "a_sql_single"),
    ("f_python_many", "b_copy"),
    ("f_python_many", "b_submit_many"),
)
ROUND_WAYS = ("a_sql_single", "e_python_single", "b_copy", "f_python_many")
METERED = ("a_sql_single", "e_python_single", "b_copy", "b_submit_many", "f_python_many")


async def run(
    bench: Bench,
    *,
    single_jobs: int,
    batched_jobs: int,
    rest_jobs: int,
    rest_batched_jobs: int,
    clients: int,
    rounds: int = 1,
) -> Record:
    record = Record("enqueue")
    record.options = {
        "single_jobs": single_jobs,
        "batched_jobs": batched_jobs,
        "rest_jobs": rest_jobs,
        "rest_batched_jobs": rest_batched_jobs,
        "clients": clients,
        "copy_batch": COPY_BATCH,
        "rest_batch": REST_BATCH,
        "rounds": rounds,
    }
    async with bench.connection() as conn:

        async def settle() -> None:
            await conn.execute("VACUUM ANALYZE sluice.jobs")
            await conn.execute("CHECKPOINT")

        rest_total = rest_batched_jobs // REST_BATCH * REST_BATCH
        measured: dict[str, float] = {}

        async def rest_both(meter: _Meter | None) -> float:
            measured["c"], measured["d"] = await rest(bench, rest_jobs, rest_total, clients)
            return measured["c"]

        async def rest_batches(meter: _Meter | None) -> float:
            return measured["d"]

        # (figure, label, jobs, how long they took to insert). Each Python path runs
        # right after the SQL it is compared with: on a shared machine the load
        # drifts over a run, and the ratio should see the same load on both sides.
        ways = [
            ("a_sql_single", f"(a) plain SQL, 1 job per transaction, {clients} clients",
             single_jobs, lambda m: sql_single(bench, single_jobs, clients, m)),
            ("e_python_single", f"(e) Python task.enqueue, 1 per transaction, {clients} clients",
             single_jobs, lambda m: python_single(bench, single_jobs, clients, m)),
            ("b_copy", f"(b) COPY, {COPY_BATCH:,} per transaction",
             batched_jobs, lambda m: copy_batches(bench, batched_jobs, meter=m)),
            ("b_submit_many", f"(b') the API's SQL (job_submit_many), {COPY_BATCH:,} per statement",
             batched_jobs, lambda m: submit_many(bench, batched_jobs, meter=m)),
            ("f_python_many", f"(f) Python task.enqueue_many, {COPY_BATCH:,} per transaction",
             batched_jobs, lambda m: python_batches(bench, batched_jobs, meter=m)),
            ("c_rest_single", f"(c) REST, 1 job per request, {clients} clients",
             rest_jobs, rest_both),
            ("d_rest_batch", f"(d) REST batch, {REST_BATCH:,} jobs per request, 4 clients",
             rest_total, rest_batches),
        ]  # fmt: skip
        by_name = {w[0]: w for w in ways}
        plan = [w[0] for w in ways] + [name for _ in range(rounds - 1) for name in ROUND_WAYS]
        io_meter = io.IoMeter(conn)
        cpu_meter = await bench.cpu_meter()
        rates: dict[str, list[float]] = {}
        meters: dict[str, list[_Meter]] = {}
        per_round: list[dict[str, dict[str, float]]] = [{} for _ in range(rounds)]
        with bench.progress("enqueue", len(plan)) as step:
            for i, name in enumerate(plan):
                _, label, jobs, timed = by_name[name]
                if name != "d_rest_batch":  # (c) and (d) share one API process
                    await settle()
                # (c) and (d) share one timing: their WAL is not told apart.
                meter = _Meter(io_meter, cpu_meter) if name in METERED else None
                rate = jobs / await timed(meter)
                rates.setdefault(name, []).append(rate)
                this_round = per_round[len(rates[name]) - 1].setdefault(name, {"jobs_s": rate})
                if meter is not None:
                    meters.setdefault(name, []).append(meter)
                    this_round["client_cpu_us_per_job"] = meter.client_s / jobs * 1e6
                    this_round["wal_bytes_per_job"] = meter.span.wal_bytes / jobs
                    if meter.server_s is not None:
                        this_round["postgres_cpu_us_per_job"] = meter.server_s / jobs * 1e6
                step.update(i + 1)
        for name, label, jobs, _ in ways:
            record.figure(name, statistics.median(rates[name]), f"{label} (jobs/s)")
            if name not in meters:
                continue
            metered, total = meters[name], jobs * len(meters[name])
            record.figure(f"{name}_client_cpu_us_per_job",
                          sum(m.client_s for m in metered) / total * 1e6,
                          f"{label}: the client's CPU per job (µs)")  # fmt: skip
            span = io.IoSpan(metered[0].span.start_lsn, metered[-1].span.end_lsn,
                             sum(m.span.wal_bytes for m in metered),
                             sum(m.span.buffers_written for m in metered))  # fmt: skip
            io.record_figures(record, span, total, label, prefix=f"{name}_")
            if all(m.server_s is not None for m in metered):
                record.figure(f"{name}_postgres_cpu_us_per_job",
                              sum(m.server_s for m in metered) / total * 1e6,
                              f"{label}: PostgreSQL's CPU per job (µs)")  # fmt: skip
    for python, sql in RATIOS:
        ratios = [r[python]["jobs_s"] / r[sql]["jobs_s"] for r in per_round
                  if python in r and sql in r and r[sql]["jobs_s"]]  # fmt: skip
        if ratios:
            record.figure(f"{python}_vs_{sql}", statistics.median(ratios),
                          f"{python} as a fraction of {sql} (jobs/s; median of "
                          f"{len(ratios)} round(s))")  # fmt: skip
        for r in per_round:
            if python in r and sql in r and r[sql]["jobs_s"]:
                r[f"{python}_vs_{sql}"] = {"ratio": r[python]["jobs_s"] / r[sql]["jobs_s"]}
    record.details["rounds"] = per_round
    record.notes.append(
        "COPY, job_submit_many and enqueue_many run on 2 connections at once; the API is one "
        "`sluice api` process on the same machine as the clients and PostgreSQL"
    )
    if rounds > 1:
        record.notes.append(
            f"{rounds} rounds of (a), (e), (b), (f): rates are medians, ratios the medians of "
            "each round's ratio, CPU and WAL per job over all rounds"
        )
    return record
