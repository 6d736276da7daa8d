"""Fault tests with real `sluice worker` processes and real PostgreSQL: kill -9,
SIGTERM, a PostgreSQL restart, leader failover under cron, random failures,
retries with backoff, timeouts, a DAG."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from pathlib import Path

import httpx
import psycopg

from sluice.core.db import connection_kwargs
from sluice.core.embedded import free_port
from tests.factories import fetch_job, insert_job
from tests.worker.helpers import (
    attempts,
    insert_diamond,
    process_gone,
    scalar,
    wait_for,
    wait_state,
)


async def running_on(db, job_id: int, worker_id: str) -> bool:
    job = await fetch_job(db, job_id)
    return job["state"] == "running" and job["worker_id"] == worker_id


async def test_a_job_of_a_killed_worker_is_finished_by_another_after_its_lease(db, spawn_worker):
    job_id = await insert_job(db, "stall_first_attempt", backoff_base=dt.timedelta(0))
    victim = spawn_worker(SLUICE_WORKER_ID="victim", SLUICE_MAINTENANCE="0")
    await wait_for(lambda: running_on(db, job_id, "victim"), 20, "the victim to run the job")
    victim.signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    rescuer = spawn_worker(SLUICE_WORKER_ID="rescuer")
    await wait_state(db, job_id, "succeeded", within=30)
    job = await fetch_job(db, job_id)
    assert job["result"] == {"worker": "rescuer", "attempt": 2}
    cur = await db.execute(
        "SELECT attempt, outcome, worker_id FROM sluice.job_attempts "
        "WHERE job_id = %s ORDER BY attempt",
        (job_id,),
    )
    assert await cur.fetchall() == [(1, "rescued", "victim"), (2, "succeeded", "rescuer")]
    rescuer.signal(signal.SIGTERM)
    assert rescuer.wait(20) == 0


async def test_retries_timeouts_and_a_dag_in_one_worker_process(db, spawn_worker, tmp_path: Path):
    base = 0.2
    failing = await insert_job(
        db, "always_fails", max_attempts=4, backoff_base=dt.timedelta(seconds=base)
    )
    hung = await insert_job(db, "hang", max_attempts=1, timeout=dt.timedelta(seconds=0.3))
    pidfile = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pidfile}; echo started; wait"
    shell = await insert_job(
        db,
        "shell",
        payload={"argv": ["sh", "-c", script]},
        max_attempts=1,
        timeout=dt.timedelta(seconds=0.5),
    )
    a, b, c, d = await insert_diamond(db)
    proc = spawn_worker("--concurrency", "8", SLUICE_ALLOW_SHELL="1")

    # A handler that always raises: retried after its backoff, then dead-lettered.
    await wait_state(db, failing, "failed", within=30)
    rows = await attempts(db, failing)
    assert [(r[0], r[1]) for r in rows] == [(i, "failed") for i in range(1, 5)]
    assert all("this handler always fails" in r[2] for r in rows)
    for k in range(1, 4):  # attempt k + 1 waits the backoff after attempt k (jitter: -20%)
        gap = (rows[k][4] - rows[k - 1][5]).total_seconds()
        assert gap >= 0.8 * base * 2 ** (k - 1) - 0.01, (k, gap)
    dead = await scalar(db, "SELECT reason FROM sluice.dead_letters WHERE job_id = %s", failing)
    assert dead == "attempts_exhausted"

    # A hanging handler and a hanging shell command are stopped at their timeouts,
    # the command with its whole process group.
    for job_id in (hung, shell):
        await wait_state(db, job_id, "failed")
        assert (await attempts(db, job_id))[0][1] == "timeout"
    assert "started" in (await attempts(db, shell))[0][3]
    child = int(pidfile.read_text())
    await wait_for(lambda: process_gone(child), 30, "the shell job's child to be killed")

    # A diamond inserted in plain SQL runs parents first.
    await wait_state(db, d, "succeeded")
    jobs = {n: await fetch_job(db, i) for n, i in zip("abcd", (a, b, c, d), strict=True)}
    assert all(j["state"] == "succeeded" for j in jobs.values())
    assert jobs["a"]["finished_at"] <= min(jobs["b"]["started_at"], jobs["c"]["started_at"])
    assert max(jobs["b"]["finished_at"], jobs["c"]["finished_at"]) <= jobs["d"]["started_at"]
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0


async def test_sigterm_lets_running_jobs_finish_and_loses_nothing(db, spawn_worker, tmp_path):
    port = free_port()
    proc = spawn_worker(
        "--concurrency",
        "2",
        "--metrics-port",
        str(port),
        SLUICE_WORKER_ID="w",
        SLUICE_SHUTDOWN_GRACE="20",
    )
    # The running jobs last until the test has seen the worker drain them.
    release = tmp_path / "release"
    held = {"seconds": 60, "release": str(release)}
    running = [await insert_job(db, "slow", payload=held) for _ in range(2)]
    queued = [await insert_job(db, "slow", payload={"seconds": 1.0}, priority=10) for _ in range(3)]

    async def both_running() -> bool:
        return all([await running_on(db, j, "w") for j in running])

    url = f"http://127.0.0.1:{port}/metrics"
    async with httpx.AsyncClient() as client:

        async def reported_running() -> bool:
            # The claim commits before the worker reads its answer and counts the jobs.
            with contextlib.suppress(httpx.TransportError):
                return "sluice_worker_jobs_running 2.0" in (await client.get(url)).text
            return False

        await wait_for(both_running, 30, "two jobs to run")
        await wait_for(reported_running, 30, "the worker to count them")
        proc.signal(signal.SIGTERM)
        # The worker still serves metrics while it drains.
        metrics = (await client.get(url)).text
    assert "sluice_worker_jobs_running 2.0" in metrics
    release.touch()
    assert proc.wait(30) == 0, proc.output()
    for job_id in running:
        job = await fetch_job(db, job_id)
        assert (job["state"], job["attempt"]) == ("succeeded", 1)
    for job_id in queued:
        job = await fetch_job(db, job_id)
        assert (job["state"], job["attempt"]) == ("ready", 0)
    assert await scalar(db, "SELECT count(*) FROM sluice.job_attempts") == 2
    assert await scalar(db, "SELECT stopped_at IS NOT NULL FROM sluice.workers WHERE id = 'w'")
    assert "stopped" in proc.output()


async def test_three_workers_fire_each_cron_occurrence_once_across_a_leader_failover(
    db, spawn_worker
):
    await db.execute(
        "INSERT INTO sluice.schedules (name, cron, job) "
        'VALUES (\'every-second\', \'* * * * * *\', \'{"task": "noop", "queue": "cron"}\')'
    )
    procs = {
        f"w{i}": spawn_worker(SLUICE_WORKER_ID=f"w{i}", SLUICE_QUEUES="cron") for i in range(3)
    }

    async def fired() -> int:
        return await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE queue = 'cron'")

    await wait_for(lambda: _at_least(fired, 3), 30, "three occurrences")
    leader = await scalar(db, "SELECT holder FROM sluice.leaders WHERE name = 'maintenance'")
    procs[leader].signal(signal.SIGKILL)
    before = await fired()
    await wait_for(lambda: _at_least(fired, before + 3), 30, "three more after the failover")
    new_leader = await scalar(db, "SELECT holder FROM sluice.leaders WHERE name = 'maintenance'")
    assert new_leader != leader
    for name, proc in procs.items():
        if name != leader:
            proc.signal(signal.SIGTERM)
            assert proc.wait(20) == 0
    cur = await db.execute(
        "SELECT idempotency_key FROM sluice.jobs WHERE queue = 'cron' ORDER BY idempotency_key"
    )
    keys = [k for (k,) in await cur.fetchall()]
    schedule_id = await scalar(db, "SELECT id FROM sluice.schedules")
    occurrences = [dt.datetime.fromisoformat(k.split(":", 2)[2]) for k in keys]
    assert all(k.startswith(f"schedule:{schedule_id}:") for k in keys)
    # Every second from the first to the last occurrence, once: no duplicate, no gap,
    # even across the leader's death (missed seconds are fired by the new leader).
    span = int((occurrences[-1] - occurrences[0]).total_seconds())
    assert len(occurrences) == span + 1 == len(set(occurrences))
    assert await scalar(db, "SELECT last_error FROM sluice.schedules") is None


async def test_two_thousand_flaky_jobs_across_three_workers_all_end_and_add_up(db, spawn_worker):
    await db.execute(
        "INSERT INTO sluice.jobs (task, payload, max_attempts, backoff_base) "
        "SELECT 'flaky', '{\"p\": 0.3}', 3, "
        "       CASE WHEN g % 2 = 0 THEN interval '0' ELSE interval '20 milliseconds' END "
        "FROM generate_series(1, 2000) g"
    )
    procs = [spawn_worker("--concurrency", "16") for _ in range(3)]

    async def all_terminal() -> bool:
        return (
            await scalar(
                db, "SELECT count(*) FROM sluice.jobs WHERE state IN ('succeeded', 'failed')"
            )
            == 2000
        )

    await wait_for(all_terminal, 90, "2000 jobs to finish")
    for proc in procs:
        proc.signal(signal.SIGTERM)
    cur = await db.execute("""
        SELECT count(*) FILTER (WHERE j.state = 'succeeded'),
               count(*) FILTER (WHERE j.state = 'failed'),
               sum(j.attempt),
               (SELECT count(*) FROM sluice.job_attempts),
               (SELECT count(*) FROM sluice.job_attempts WHERE outcome = 'succeeded'),
               (SELECT count(*) FROM sluice.dead_letters),
               (SELECT count(DISTINCT worker_id) FROM sluice.job_attempts)
          FROM sluice.jobs j""")
    succeeded, failed, attempts, logged, logged_ok, dead, workers = await cur.fetchone()
    assert succeeded + failed == 2000
    assert succeeded > 0 and failed > 0  # p = 0.3 over 3 attempts: ~2.7% fail
    assert attempts == logged  # one log row per attempt, none lost or doubled
    assert logged_ok == succeeded
    assert dead == failed
    assert workers == 3
    # Per job: attempts numbered 1..n; only the last may have succeeded; a failed job used all 3.
    bad = await scalar(
        db,
        """
        SELECT count(*) FROM sluice.jobs j
         WHERE (SELECT array_agg(a.attempt ORDER BY a.attempt) FROM sluice.job_attempts a
                 WHERE a.job_id = j.id)
               <> (SELECT array_agg(g) FROM generate_series(1, j.attempt) g)
            OR EXISTS (SELECT 1 FROM sluice.job_attempts a
                        WHERE a.job_id = j.id AND a.outcome = 'succeeded'
                          AND a.attempt <> j.attempt)
            OR (j.state = 'failed' AND j.attempt <> 3)""",
    )
    assert bad == 0
    for proc in procs:
        assert proc.wait(20) == 0


async def test_workers_reconnect_after_postgres_restarts(own_server, spawn_worker):
    url = own_server.url()
    procs = [spawn_worker("--concurrency", "8", url=url) for _ in range(2)]
    total = 0

    async def submit(batches: int) -> None:
        nonlocal total
        async with await psycopg.AsyncConnection.connect(url, **connection_kwargs()) as conn:
            for _ in range(batches):
                await conn.execute(
                    "INSERT INTO sluice.jobs (task, payload, backoff_base) "
                    "SELECT 'slow', '{\"seconds\": 0.05}', '10 milliseconds' "
                    "FROM generate_series(1, 20)"
                )
                total += 20
                await asyncio.sleep(0.05)

    async def succeeded() -> int:
        async with await psycopg.AsyncConnection.connect(url, **connection_kwargs()) as conn:
            return await scalar(conn, "SELECT count(*) FROM sluice.jobs WHERE state = 'succeeded'")

    # Both running before the restart (a worker still starting up when the server
    # goes away fails its start, as it should: that is not what this tests).
    await wait_for(lambda: all(" started:" in p.output() for p in procs), 30, "the workers")
    await submit(10)
    # Restart while jobs flow: some done, others running or waiting.
    await wait_for(lambda: _at_least(succeeded, 40), 30, "the workers to get going")
    await asyncio.to_thread(own_server.stop)
    await asyncio.to_thread(own_server.start)
    await submit(5)

    async with await psycopg.AsyncConnection.connect(url, **connection_kwargs()) as conn:

        async def all_done() -> bool:
            return (
                await scalar(conn, "SELECT count(*) FROM sluice.jobs WHERE state = 'succeeded'")
                == total
            )

        with contextlib.suppress(AssertionError):
            await wait_for(all_done, 60, "every job to succeed")
        cur = await conn.execute("SELECT state::text, count(*) FROM sluice.jobs GROUP BY 1")
        assert dict(await cur.fetchall()) == {"succeeded": total}
    assert all(p.proc.poll() is None for p in procs), "a worker died with the server"
    for proc in procs:
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "reconnect" in proc.output()


async def _at_least(count, n: int) -> bool:
    return await count() >= n


def test_the_command_explains_an_unreachable_database(spawn_worker):
    proc = spawn_worker(url=f"postgresql://sluice:hunter2@127.0.0.1:{free_port()}/sluice")
    assert proc.wait(30) == 1
    output = proc.output()
    assert "Error: cannot use the database postgresql://sluice:***@127.0.0.1" in output
    assert "hunter2" not in output
