"""What the waiter trigger (sql/schema/48_waiters.sql) costs a claim and a
completion nobody waits for: PostgreSQL's CPU per job for claim + complete, with
the trigger and with it dropped, in batches of 1 and of 100, alternating rounds.

    python -m tests.python_api.measure_waiters [jobs]

Run by hand (not by pytest): CPU time of the server backend is read from /proc,
so the figure holds on a busy machine where jobs/s do not.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import psycopg

from sluice.core import migrate
from sluice.core.embedded import EmbeddedPostgres

ROUNDS = 6


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


async def cycle(conn: psycopg.AsyncConnection, jobs: int, batch: int) -> None:
    await conn.execute(
        "INSERT INTO sluice.jobs (task) SELECT 'noop' FROM generate_series(1, %s)", (jobs,)
    )
    done = 0
    while done < jobs:
        cur = await conn.execute(
            "SELECT id, attempt FROM sluice.job_claim('w', ARRAY['default'], %s, '30 seconds')",
            (batch,),
        )
        claimed = await cur.fetchall()
        await conn.execute(
            "SELECT sluice.job_complete_many('w', %s, %s, %s::jsonb[])",
            ([r[0] for r in claimed], [r[1] for r in claimed], [None] * len(claimed)),
        )
        done += len(claimed)
    await conn.execute("DELETE FROM sluice.jobs")
    await conn.execute("VACUUM ANALYZE sluice.jobs")


async def main(jobs: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="sluice-measure-"))
    server = EmbeddedPostgres(data, settings={"fsync": "off", "synchronous_commit": "off"})
    server.start()
    try:
        await asyncio.to_thread(migrate.upgrade, server.url())
        async with await psycopg.AsyncConnection.connect(server.url(), autocommit=True) as conn:
            pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
            await cycle(conn, 1000, 100)  # warm up
            for batch in (1, 100):
                totals = {"with the trigger": 0.0, "without": 0.0}
                for _ in range(ROUNDS):
                    for label in totals:
                        async with conn.transaction():
                            if label == "without":
                                await conn.execute(
                                    "ALTER TABLE sluice.jobs DISABLE TRIGGER jobs_wake_waiters"
                                )
                        began = backend_cpu(pid)
                        await cycle(conn, jobs, batch)
                        totals[label] += backend_cpu(pid) - began  # the VACUUM included
                        await conn.execute(
                            "ALTER TABLE sluice.jobs ENABLE TRIGGER jobs_wake_waiters"
                        )
                for label, seconds in totals.items():
                    print(
                        f"batch {batch:>3}, {label:>16}: {seconds / (ROUNDS * jobs) * 1e6:6.1f} µs "
                        "of PostgreSQL CPU per job (insert + claim + complete + delete)"
                    )
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
