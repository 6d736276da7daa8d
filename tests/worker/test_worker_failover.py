"""A failover as a worker sees it, on a server of the test's own: every
connection dropped, then a server that only reads (SQLSTATE 25006, what the old
primary is after a switchover, reached through a URL naming one fixed host),
for longer than the lease, then writes again. Real `sluice worker` processes.

- Jobs that end while the database is read-only are recorded as they ended
  (never as a failure), once it takes writes again, and run once.
- Jobs still running through it are not rescued although their leases ran out:
  the maintenance leader waits a whole lease after it regains the database, and
  their worker renews them long before that.
- A worker that died during it is rescued, a lease after the database is back.
- Claimer, lease keeper, heartbeat, listener and leader come back by themselves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from sluice.core import protocol
from sluice.core.db import connection_kwargs
from sluice.core.embedded import EmbeddedPostgres
from tests.factories import scalar
from tests.worker.helpers import wait_for

LEASE = 2.0  # the worker tests' lease (tests/worker/conftest.py spawn_worker)
READ_ONLY = 5.0  # longer than the lease
HELD = 1.0  # shorter than the lease


async def connect(url: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(url, **connection_kwargs(prepare=False))


async def read_only(conn: psycopg.AsyncConnection, on: bool) -> dt.datetime:
    """The server refuses writes from now on (`on`), or takes them again; answers
    the database's clock at that moment. Turning it read-only also drops every
    Sluice connection, as a demotion does: what reconnects finds a server that
    only reads."""
    if on:
        await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
    else:
        await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
    await conn.execute("SELECT pg_reload_conf()")
    await wait_for(
        lambda: _setting_is(conn, "on" if on else "off"), 30, "the setting to take effect"
    )
    if on:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'sluice%%' AND pid <> pg_backend_pid()"
        )
    return await scalar(conn, "SELECT now()")


async def _setting_is(conn: psycopg.AsyncConnection, value: str) -> bool:
    # A new transaction reads the reloaded value.
    return await scalar(conn, "SHOW default_transaction_read_only") == value


def runs(path: Path) -> Counter[int]:
    """How many times each job's handler started (every attempt), from the handlers' log."""
    if not path.exists():
        return Counter()
    return Counter(
        int(line.split()[0]) for line in path.read_text().splitlines() if "start" in line
    )


async def enqueue(conn, task: str, payload: dict[str, Any], n: int, queue: str = "default"):
    cur = await conn.execute(
        "SELECT sluice.enqueue(%s, %s::jsonb, queue => %s, backoff_base => '0') "
        "FROM generate_series(1, %s)",
        (task, psycopg.types.json.Jsonb(payload), queue, n),
    )
    return [row[0] for row in await cur.fetchall()]


async def attempt_log(conn, ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    cur = await conn.execute(
        "SELECT job_id, attempt, outcome FROM sluice.job_attempts WHERE job_id = ANY(%s) "
        "ORDER BY job_id, attempt",
        (ids,),
    )
    log: dict[int, list[tuple[int, str]]] = {i: [] for i in ids}
    for job_id, attempt, outcome in await cur.fetchall():
        log[job_id].append((attempt, outcome))
    return log


async def test_a_read_only_database_longer_than_the_lease_loses_nothing_and_runs_nothing_twice(
    own_server: EmbeddedPostgres, spawn_worker, tmp_path: Path
):
    url = own_server.url()
    events = tmp_path / "events"
    conn = await connect(url)
    try:
        worker = spawn_worker(
            "--concurrency", "8", url=url, SLUICE_WORKER_ID="w", SLUICE_MAINTENANCE="0"
        )
        leader = spawn_worker(url=url, SLUICE_WORKER_ID="leader", SLUICE_QUEUES="elsewhere")
        await wait_for(
            lambda: all(" started:" in p.output() for p in (worker, leader)), 30, "the workers"
        )
        # Jobs that end while the server only reads, and jobs that run through it:
        # each held until the test releases it, however long the steps take.
        end_now, end_later = tmp_path / "end-now", tmp_path / "end-later"
        held = {"file": str(events), "seconds": 60}
        ending = await enqueue(conn, "timed", {**held, "release": str(end_now)}, 3)
        through = await enqueue(conn, "timed", {**held, "release": str(end_later)}, 2)
        every = ending + through
        await wait_for(lambda: set(every) <= runs(events).keys(), 30, "every job to start")

        await read_only(conn, True)
        end_now.touch()
        await asyncio.sleep(READ_ONLY)
        # The worker is held a moment past the database's return (as a slow
        # reconnection would): the leader regains the database first, and must
        # not take the worker's jobs, whose leases ran out during the outage.
        worker.signal(signal.SIGSTOP)
        try:
            back = await read_only(conn, False)
            await asyncio.sleep(HELD)
        finally:
            worker.signal(signal.SIGCONT)
        end_later.touch()
        # The claimer is back by itself: jobs submitted now run too.
        later = await enqueue(conn, "timed", {"file": str(events), "seconds": 0}, 4)

        async def all_succeeded() -> bool:
            done = await scalar(
                conn,
                "SELECT count(*) FROM sluice.jobs WHERE id = ANY(%s) AND state = 'succeeded'",
                every + later,
            )
            return done == len(every + later)

        await wait_for(all_succeeded, 40, "every job to succeed")
        log = await attempt_log(conn, every + later)
        assert {i: a for i, a in log.items() if a != [(1, "succeeded")]} == {}
        assert {i: n for i, n in runs(events).items() if n != 1} == {}
        # Nothing was written while the server only read: the outcomes of the jobs
        # that ended during it were written after it.
        finished = await scalar(
            conn, "SELECT min(finished_at) FROM sluice.jobs WHERE id = ANY(%s)", ending
        )
        assert finished >= back
        assert worker.proc.poll() is None and leader.proc.poll() is None
        output = worker.output()
        assert "not the primary" in output, output
        assert "Traceback" not in output, output
        # The leader held its rescue back for a lease after regaining the database.
        assert "rescue of expired leases waits" in leader.output()
        assert "whose worker stopped heartbeating" not in leader.output()
        for proc in (worker, leader):
            proc.signal(signal.SIGTERM)
            assert proc.wait(20) == 0, proc.output()
    finally:
        await conn.close()


async def test_a_worker_that_dies_during_an_outage_is_rescued_a_lease_after_it(
    own_server: EmbeddedPostgres, spawn_worker, tmp_path: Path
):
    url = own_server.url()
    conn = await connect(url)
    try:
        victim = spawn_worker(url=url, SLUICE_WORKER_ID="victim", SLUICE_MAINTENANCE="0")
        [job_id] = await enqueue(conn, "stall_first_attempt", {}, 1)
        await wait_for(lambda: _running_on(conn, job_id, "victim"), 20, "the victim to run the job")
        leader = spawn_worker(url=url, SLUICE_WORKER_ID="leader")
        await wait_for(lambda: " started:" in leader.output(), 30, "the leader")

        await read_only(conn, True)
        victim.signal(signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        await asyncio.sleep(READ_ONLY)
        back = await read_only(conn, False)

        async def succeeded() -> bool:
            return (
                await scalar(conn, "SELECT state::text FROM sluice.jobs WHERE id = %s", job_id)
                == "succeeded"
            )

        await wait_for(succeeded, 30, "the job to be rescued and run again")
        log = await attempt_log(conn, [job_id])
        assert log[job_id] == [(1, "rescued"), (2, "succeeded")]
        rescued_at = await scalar(
            conn,
            "SELECT finished_at FROM sluice.job_attempts WHERE job_id = %s AND attempt = 1",
            job_id,
        )
        # Not before the leader has had the database for a lease; not much after.
        waited = (rescued_at - back).total_seconds()
        assert LEASE - 0.5 <= waited < 4 * LEASE + 5, waited
        leader.signal(signal.SIGTERM)
        assert leader.wait(20) == 0, leader.output()
    finally:
        await conn.close()


async def _running_on(conn, job_id: int, worker_id: str) -> bool:
    cur = await conn.execute(
        "SELECT state::text, worker_id FROM sluice.jobs WHERE id = %s", (job_id,)
    )
    return await cur.fetchone() == ("running", worker_id)


async def test_with_a_synchronous_standby_a_claim_waits_for_it(own_server: EmbeddedPostgres):
    """A claim lost with a killed primary would be handed out again by the promoted
    standby while its first run goes on. With synchronous replicas configured, a
    claim therefore waits for a standby, as a completion does (here there is none
    to answer, so it waits until synchronous replication is turned off again)."""
    conn = await connect(own_server.url())
    worker = await connect(own_server.url())
    try:
        [job_id] = await enqueue(conn, "noop", {}, 1)
        await conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        await conn.execute("SELECT pg_reload_conf()")
        await wait_for(lambda: _synchronous_standby_names_is(worker, "nobody"), 30, "the setting")
        # Commits wait for a standby only once the checkpointer has reloaded the
        # setting too (it publishes "synchronous standbys are defined"); a CHECKPOINT
        # returns after its loop has passed through the reload.
        await conn.execute("CHECKPOINT")
        claim = asyncio.create_task(
            protocol.job_claim(
                worker, worker_id="w", queues=["default"], limit=1, lease=dt.timedelta(30)
            )
        )
        done, _ = await asyncio.wait([claim], timeout=1.0)
        assert not done, "the claim did not wait for the synchronous standby"
        await conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await conn.execute("SELECT pg_reload_conf()")
        [job] = await asyncio.wait_for(claim, 10)
        assert job.id == job_id
        # Without synchronous replicas it commits without waiting at all.
        [other] = await enqueue(conn, "noop", {}, 1)
        async with asyncio.timeout(30):
            [job] = await protocol.job_claim(
                worker, worker_id="w", queues=["default"], limit=1, lease=dt.timedelta(30)
            )
        assert job.id == other
    finally:
        await conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await conn.execute("SELECT pg_reload_conf()")
        await worker.close()
        await conn.close()


async def _synchronous_standby_names_is(conn: psycopg.AsyncConnection, value: str) -> bool:
    return await scalar(conn, "SHOW synchronous_standby_names") == value
