"""Rough worker figures: no-op drain rate of one `sluice worker` process, and
wake-up latency from an INSERT's commit to its handler starting.

    .venv/bin/python bench/worker_drain.py --jobs 50000 --concurrency 256

Starts its own EmbeddedPostgres (default durability settings), so nothing else
is needed. The figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from worker import task

ROOT = Path(__file__).resolve().parents[1]


@task  # the worker loads this module through SLUICE_TASK_MODULES=worker_drain
async def stamp(payload: object) -> float:
    """The wall-clock time the handler started."""
    return time.time()


async def count(conn, sql: str) -> int:
    cur = await conn.execute(sql)
    return (await cur.fetchone())[0]


async def drain(url: str, jobs: int, concurrency: int) -> subprocess.Popen:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO sluice.jobs (task) SELECT 'noop' FROM generate_series(1, %s)", (jobs,)
        )
        await conn.execute("VACUUM ANALYZE sluice.jobs")
        env = {
            **os.environ,
            "SLUICE_CONCURRENCY": str(concurrency),
            "SLUICE_MAINTENANCE": "0",
            "SLUICE_LOG_LEVEL": "WARNING",
            "SLUICE_TASK_MODULES": "worker_drain",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)]),
        }
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
            [
                sys.executable,
                "-c",
                "from app.cli import main; main()",
                "worker",
                "--database-url",
                url,
            ],
            env=env,
            cwd=ROOT,
        )
        if jobs:  # --jobs 0: only the wake-up latency
            # The clock starts at the first claim, not at process start-up.
            first_claim = "SELECT count(*) FROM sluice.jobs WHERE state <> 'ready'"
            while await count(conn, first_claim) == 0:  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.002)
            began = time.perf_counter()
            done_sql = "SELECT count(*) FROM sluice.jobs WHERE state = 'succeeded'"
            while await count(conn, done_sql) < jobs:  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - began
            print(
                f"drain: {jobs} no-op jobs in {elapsed:.2f}s = {jobs / elapsed:,.0f} jobs/s "
                f"(one worker process, concurrency {concurrency})"
            )
        else:
            await asyncio.sleep(2)  # let the worker start
        return proc


async def latency(url: str, samples: int) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        delays = []
        for _ in range(samples):
            cur = await conn.execute("INSERT INTO sluice.jobs (task) VALUES ('stamp') RETURNING id")
            committed = time.time()  # autocommit: the INSERT has committed
            job_id = (await cur.fetchone())[0]
            while True:
                cur = await conn.execute(
                    "SELECT state::text, result FROM sluice.jobs WHERE id = %s", (job_id,)
                )
                state, started = await cur.fetchone()
                if state == "succeeded":
                    break
                await asyncio.sleep(0.001)
            delays.append((started - committed) * 1000)
            await asyncio.sleep(0.01)  # idle between jobs: measure wake-ups, not a backlog
        delays.sort()
        p50, p99 = delays[len(delays) // 2], delays[int(len(delays) * 0.99)]
        print(
            f"wake-up (commit to handler start, idle worker): p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms over {samples} jobs"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from app.core import migrate
    from app.core.embedded import EmbeddedPostgres

    data_dir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    server = EmbeddedPostgres(data_dir)
    server.start()
    proc = None
    try:
        migrate.upgrade(server.url())
        proc = await drain(server.url(), args.jobs, args.concurrency)
        await latency(server.url(), args.samples)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
