"""`enqueue`: jobs/s inserted, four ways.

(a) plain SQL, one `INSERT INTO sluice.jobs` per transaction, from concurrent
    clients (each commit waits for its WAL flush: group commit is what helps);
(b) the batch path: COPY into sluice.jobs, 10,000 rows per transaction; and the
    API's own set-based insert (job_submit_many, one JSON parameter) beside it;
(c) REST: POST /api/v1/jobs, one job per request, from concurrent clients;
(d) REST: POST /api/v1/jobs/batch, 1,000 jobs per request;
(e) the Python API, `task.enqueue(conn)`, one job per transaction, as (a);
(f) the Python API, `task.enqueue_many(conn, [...])`, 10,000 per transaction, as (b).
Every job is a no-op in queue `default`; nothing consumes them. (e) and (f) go
through a task declared with `@sluice.task`'s machinery (typed: its payload is
checked at the door) and the engine's functions (sluice.enqueue, enqueue_many).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

from bench import io
from bench.api import api_process
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
}
QUICK = {
    "single_jobs": 5_000,
    "batched_jobs": 200_000,
    "rest_jobs": 2_000,
    "rest_batched_jobs": 50_000,
    "clients": 16,
}


async def _spread(total: int, clients: int, one: callable) -> float:
    """Run `one(n)` on `clients` concurrent workers sharing `total`; answers the seconds."""
    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    began = time.perf_counter()
    await asyncio.gather(*(one(n) for n in shares if n))
    return time.perf_counter() - began


async def _on_connections(bench: Bench, total: int, connections: int, one: callable) -> float:
    """Run `one(conn, n)` on `connections` new connections at once, sharing `total`
    jobs between them; answers the seconds."""
    conns = [await bench.connect() for _ in range(connections)]
    try:
        it = iter(conns)
        return await _spread(total, connections, lambda n: one(next(it), n))
    finally:
        for conn in conns:
            await conn.close()


async def _in_batches(n: int, insert: callable) -> None:
    """`insert(size)` for batches of COPY_BATCH jobs (the last one smaller) making n."""
    while n > 0:
        size = min(n, COPY_BATCH)
        await insert(size)
        n -= size


async def sql_single(bench: Bench, total: int, clients: int) -> float:
    async def one(conn, n: int) -> None:
        for _ in range(n):
            await conn.execute("INSERT INTO sluice.jobs (task, payload) VALUES ('noop', '{}')")

    return await _on_connections(bench, total, clients, one)


async def copy_batches(bench: Bench, total: int, connections: int = 2) -> float:
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

    return await _on_connections(bench, total, connections, one)


async def submit_many(bench: Bench, total: int, connections: int = 2) -> float:
    """The API's SQL (job_submit_many), COPY_BATCH jobs per statement."""

    async def one(conn, n: int) -> None:
        async def insert(size: int) -> None:
            jobs = json.dumps(
                [{"task": "noop", "payload": {}} | dataclasses.asdict(JOB_DEFAULTS)] * size
            )
            await engine.job_submit_many(conn, jobs=jobs, tenant="default")

        await _in_batches(n, insert)

    return await _on_connections(bench, total, connections, one)


async def python_single(bench: Bench, total: int, clients: int) -> float:
    """(e): NOOP.enqueue(conn), each in its own transaction (autocommit), as (a)."""

    async def one(conn, n: int) -> None:
        for _ in range(n):
            await NOOP.enqueue(conn)

    return await _on_connections(bench, total, clients, one)


async def python_batches(bench: Bench, total: int, connections: int = 2) -> float:
    """(f): NOOP.enqueue_many(conn, ...), COPY_BATCH jobs per transaction, as (b)."""

    async def one(conn, n: int) -> None:
        async def insert(size: int) -> None:
            await NOOP.enqueue_many(conn, [{}] * size)

        await _in_batches(n, insert)

    return await _on_connections(bench, total, connections, one)


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


async def run(
    bench: Bench,
    *,
    single_jobs: int,
    batched_jobs: int,
    rest_jobs: int,
    rest_batched_jobs: int,
    clients: int,
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
    }
    async with bench.connection() as conn:

        async def settle() -> None:
            await conn.execute("VACUUM ANALYZE sluice.jobs")
            await conn.execute("CHECKPOINT")

        rest_total = rest_batched_jobs // REST_BATCH * REST_BATCH
        measured: dict[str, float] = {}

        async def rest_both() -> float:
            measured["c"], measured["d"] = await rest(bench, rest_jobs, rest_total, clients)
            return measured["c"]

        async def rest_batches() -> float:
            return measured["d"]

        # (figure, label, jobs, how long they took to insert). Each Python path runs
        # right after the SQL it is compared with: on a shared machine the load
        # drifts over a run, and the ratio should see the same load on both sides.
        ways = [
            ("a_sql_single", f"(a) plain SQL, 1 job per transaction, {clients} clients",
             single_jobs, lambda: sql_single(bench, single_jobs, clients)),
            ("e_python_single", f"(e) Python task.enqueue, 1 per transaction, {clients} clients",
             single_jobs, lambda: python_single(bench, single_jobs, clients)),
            ("b_copy", f"(b) COPY, {COPY_BATCH:,} per transaction",
             batched_jobs, lambda: copy_batches(bench, batched_jobs)),
            ("b_submit_many", f"(b') the API's SQL (job_submit_many), {COPY_BATCH:,} per statement",
             batched_jobs, lambda: submit_many(bench, batched_jobs)),
            ("f_python_many", f"(f) Python task.enqueue_many, {COPY_BATCH:,} per transaction",
             batched_jobs, lambda: python_batches(bench, batched_jobs)),
            ("c_rest_single", f"(c) REST, 1 job per request, {clients} clients",
             rest_jobs, rest_both),
            ("d_rest_batch", f"(d) REST batch, {REST_BATCH:,} jobs per request, 4 clients",
             rest_total, rest_batches),
        ]  # fmt: skip
        metered_ways = (
            "a_sql_single",
            "b_copy",
            "b_submit_many",
            "e_python_single",
            "f_python_many",
        )
        io_meter = io.IoMeter(conn)
        cpu_meter = await bench.cpu_meter()
        with bench.progress("enqueue", len(ways)) as step:
            for i, (name, label, jobs, timed) in enumerate(ways):
                if name != "d_rest_batch":  # (c) and (d) share one API process
                    await settle()
                # (c) and (d) share one timing: their WAL is not told apart.
                metered = name in metered_ways
                if metered:
                    cpu_meter.start()
                    await io_meter.start()
                    client_cpu = time.process_time()
                record.figure(name, jobs / await timed(), f"{label} (jobs/s)")
                if metered:
                    record.figure(f"{name}_client_cpu_us_per_job",
                                  (time.process_time() - client_cpu) / jobs * 1e6,
                                  f"{label}: the client's CPU per job (µs)")  # fmt: skip
                    io.record_figures(record, await io_meter.stop(), jobs, label, prefix=f"{name}_")
                    server = cpu_meter.stop([])["postgres_s"]
                    if server is not None:
                        record.figure(f"{name}_postgres_cpu_us_per_job", server / jobs * 1e6,
                                      f"{label}: PostgreSQL's CPU per job (µs)")  # fmt: skip
                step.update(i + 1)
    figures = record.figures
    for python, sql in (("e_python_single", "a_sql_single"), ("f_python_many", "b_copy"),
                        ("f_python_many", "b_submit_many")):  # fmt: skip
        if figures.get(python) and figures.get(sql):
            record.figure(f"{python}_vs_{sql}", figures[python] / figures[sql],
                          f"{python} as a fraction of {sql} (jobs/s)")  # fmt: skip
    record.notes.append(
        "COPY, job_submit_many and enqueue_many run on 2 connections at once; the API is one "
        "`sluice api` process on the same machine as the clients and PostgreSQL"
    )
    return record
