"""A worker's start-up: what it imports and what it waits for before its first
claim (issue 15: under 200 ms to the first claim), and that claiming before its
row is registered keeps every guarantee: leases, outcomes, rescue, the row's
tasks and heartbeat, waiter rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from sluice.core import db as sluice_db
from sluice.core.db import PREPARED
from sluice.core.embedded import free_port
from sluice.worker.runner import Worker
from tests.factories import fetch_job, insert_job, rows, scalar
from tests.worker.helpers import ROOT, wait_for, wait_state, worker_settings

# Modules a worker without maintenance never needs before its first claim.
NOT_BEFORE_FIRST_CLAIM = (
    "croniter",
    "sluice.worker.maintenance",
    "sluice.worker.cron",
    "prometheus_client",
    "sluice.core.metrics",
    "smtplib",  # the email handler's, imported when it sends
    # A worker's own tokens come from os.urandom; the webhook handler signs with
    # hmac when it delivers.
    "secrets",
    "hmac",
    "hashlib",
)
MAINTENANCE_ONLY = ("croniter", "sluice.worker.maintenance", "sluice.worker.cron")


def loaded_by(imports: str, modules: list[str]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after `import <imports>`."""
    code = (
        f"import sys, json; import {imports}; "
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_the_worker_command_imports_no_maintenance_and_no_metrics_modules():
    imports = "sluice.cli.worker, sluice.worker.runner, sluice.worker.handlers"
    assert loaded_by(imports, list(NOT_BEFORE_FIRST_CLAIM)) == []


def test_the_entry_and_the_worker_body_import_no_click():
    """`sluice worker` without arguments runs through these only (sluice.cli.main)."""
    code = (
        "import sys; import sluice.cli, sluice.cli.worker_process, sluice.worker.runner; "
        "print('click' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_entry_loads_nothing_heavy_before_the_collector_pause():
    """`sluice worker`'s entry and body import asyncio, psycopg and sluice's worker
    only inside collector_paused (their objects are frozen, never collected)."""
    heavy = ["asyncio", "psycopg", "msgspec", "sluice.worker.runner"]
    assert loaded_by("sluice.cli, sluice.cli.worker_process", heavy) == []


def sluice_worker(database_url: str | None, *args: str, **env: str) -> subprocess.Popen[str]:
    """`python -m sluice worker`, no arguments (every setting from the environment)
    unless `args` are given."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    environ.update(
        {
            "PYTHONPATH": str(ROOT),
            "SLUICE_TASK_MODULES": "tests.worker.tasks",
            "SLUICE_MAINTENANCE": "0",
            **({"SLUICE_DATABASE_URL": database_url} if database_url else {}),
            **env,
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "sluice", "worker", *args],
        env=environ,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_sluice_worker_without_arguments_runs_without_click(database_url, db):
    proc = sluice_worker(database_url)
    try:
        job = await insert_job(db, "loaded_modules", payload={"modules": ["click", "smtplib"]})
        await wait_state(db, job, "succeeded", within=30)
        assert (await fetch_job(db, job))["result"] == {"click": False, "smtplib": False}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stdout.read() if proc.stdout else ""


@pytest.mark.parametrize("args", [(), ("--concurrency", "2")], ids=["no-arguments", "click"])
async def test_the_worker_loads_its_modules_without_collecting_and_freezes_them(
    database_url, db, args
):
    """Loading asyncio, psycopg and sluice makes tens of thousands of objects that
    live as long as the process: the collector is off meanwhile, then they are
    frozen (never walked by a collection) and it is on again, for the task
    modules too."""
    proc = sluice_worker(database_url, *args)
    try:
        job = await insert_job(db, "collector_state")
        await wait_state(db, job, "succeeded", within=30)
        state = (await fetch_job(db, job))["result"]
        assert state["enabled"] and state["enabled_at_import"]
        assert state["frozen"] > 10_000
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stdout.read() if proc.stdout else ""


@pytest.mark.parametrize(
    ("env", "code", "message"),
    [
        # Refused settings: click reads them again and reports them as it always did.
        ({}, 2, "Error: No database: pass --database-url or set SLUICE_DATABASE_URL"),
        ({"SLUICE_CONCURRENCY": "0"}, 2, "Error: Invalid value for '--concurrency'"),
        ({"SLUICE_LEASE_TTL": "soon"}, 2, "Usage: sluice worker [OPTIONS]"),
        ({"SLUICE_LEASE_TTL": "soon"}, 2, "Error: SLUICE_LEASE_TTL: expected a duration"),
    ],
)
def test_sluice_worker_without_arguments_reports_bad_settings_as_click_does(env, code, message):
    url = None if not env else f"postgresql://sluice@127.0.0.1:{free_port()}/sluice"
    proc = sluice_worker(url, **env)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert message in out


def test_sluice_worker_without_arguments_reports_an_unreachable_database():
    url = f"postgresql://sluice:hunter2@127.0.0.1:{free_port()}/sluice"
    proc = sluice_worker(url)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "Error: cannot use the database postgresql://sluice:***@127.0.0.1" in out


@pytest.mark.parametrize("maintenance", [False, True])
async def test_maintenance_modules_are_loaded_only_where_maintenance_runs(
    db, spawn_worker, maintenance
):
    proc = spawn_worker(SLUICE_MAINTENANCE="1" if maintenance else "0")
    job = await insert_job(db, "loaded_modules", payload={"modules": list(MAINTENANCE_ONLY)})
    await wait_state(db, job, "succeeded", within=30)
    loaded = (await fetch_job(db, job))["result"]
    assert loaded == {name: maintenance for name in MAINTENANCE_ONLY}
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@contextlib.asynccontextmanager
async def workers_table_locked(database_url: str) -> AsyncIterator[None]:
    """sluice.workers locked against writes (readers go on) until the block ends: a
    worker's registration waits there."""
    conn = await psycopg.AsyncConnection.connect(database_url)
    try:
        await conn.execute("LOCK TABLE sluice.workers IN SHARE ROW EXCLUSIVE MODE")
        yield
    finally:
        await conn.rollback()
        await conn.close()


async def test_the_first_claim_does_not_wait_for_the_worker_row(database_url, db):
    """Registration held up: the worker claims and holds its job (its lease renewed,
    no waiter row written yet); once the row is in, the job completes and the row
    carries the worker's tasks and heartbeat."""
    settings = worker_settings(lease_ttl=2.0, heartbeat_interval=0.3)
    worker = Worker(settings, database_url)
    job = await insert_job(db, "echo", payload={"n": 1})
    run = None
    try:
        async with workers_table_locked(database_url):
            run = asyncio.create_task(worker.run())

            async def claimed() -> bool:
                found = await rows(
                    db, "SELECT state::text, worker_id FROM sluice.jobs WHERE id = %s", job
                )
                return found[0] == {"state": "running", "worker_id": worker.id}

            await wait_for(claimed, 30, "the job to be claimed before the worker row exists")
            first_lease = (await fetch_job(db, job))["lease_expires_at"]
            # Past a whole lease: renewed all along, never rescued.
            await asyncio.sleep(2.5)
            assert (await fetch_job(db, job))["lease_expires_at"] > first_lease
            assert await scalar(db, "SELECT count(*) FROM sluice.job_rescue_expired(100)") == 0
            assert (await fetch_job(db, job))["state"] == "running"
            assert not worker.started.is_set()
            assert await scalar(db, "SELECT count(*) FROM sluice.workers") == 0
            assert await scalar(db, "SELECT count(*) FROM sluice.queue_waiters") == 0
        await asyncio.wait_for(worker.started.wait(), 30)
        await wait_state(db, job, "succeeded")
        (row,) = await rows(
            db, "SELECT tasks, queues, pid, started_at, heartbeat_at FROM sluice.workers"
        )
        assert set(row["tasks"]) == set(worker.registry.names())
        assert "echo" in row["tasks"] and row["queues"] == ["default"]

        async def beating() -> bool:
            return (
                await scalar(db, "SELECT heartbeat_at FROM sluice.workers WHERE id = %s", worker.id)
                > row["heartbeat_at"]
            )

        await wait_for(beating, 10, "a heartbeat after the registration")
        assert await scalar(
            db, "SELECT alive FROM sluice.worker_status WHERE worker_id = %s", worker.id
        )
        # Idle now: its waiter rows are written, after the row.
        await wait_for(lambda: worker.claimer.armed, 10, "the worker to wait for wake-ups")
        assert (
            await scalar(
                db, "SELECT count(*) FROM sluice.queue_waiters WHERE worker_id = %s", worker.id
            )
            == 1
        )
        # And a job inserted now wakes it.
        second = await insert_job(db, "echo", payload={"n": 2})
        await wait_state(db, second, "succeeded")
    finally:
        worker.stop(hurry=True)
        if run is not None:
            await asyncio.wait_for(run, 30)


async def test_a_worker_killed_before_its_row_exists_has_its_job_rescued(
    database_url, db, spawn_worker
):
    job = await insert_job(db, "hang", max_attempts=3)
    async with workers_table_locked(database_url):
        proc = spawn_worker(SLUICE_WORKER_ID="unregistered", SLUICE_MAINTENANCE="0")

        async def claimed() -> bool:
            return (await fetch_job(db, job))["worker_id"] == "unregistered"

        await wait_for(claimed, 30, "the worker to claim before registering")
        proc.signal(signal.SIGKILL)
        proc.wait(10)
    # (Its row may still come in: the server ran the INSERT that was waiting.)
    assert await scalar(db, "SELECT count(*) FROM sluice.queue_waiters") == 0

    async def rescued() -> bool:
        await db.execute("SELECT sluice.job_rescue_expired(100)")
        return (await fetch_job(db, job))["state"] != "running"

    await wait_for(rescued, 30, "the lease to expire and the job to be rescued")
    (attempt,) = await rows(
        db, "SELECT worker_id, outcome FROM sluice.job_attempts WHERE job_id = %s", job
    )
    assert attempt == {"worker_id": "unregistered", "outcome": "rescued"}
    assert (await fetch_job(db, job))["state"] in ("ready", "scheduled")


async def test_a_registration_the_database_refuses_ends_the_worker_with_its_error(database_url, db):
    """After the first claim, too: what it claimed is handed back."""
    await db.execute(
        """
        CREATE FUNCTION public.refuse_workers() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'no workers today'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON sluice.workers
            FOR EACH ROW EXECUTE FUNCTION public.refuse_workers();
        """
    )
    job = await insert_job(db, "hang")
    worker = Worker(worker_settings(shutdown_grace=0.5), database_url)
    async with workers_table_locked(database_url):
        run = asyncio.create_task(worker.run())
        await wait_for(
            lambda: worker.claimer is not None and worker.claimer.claimed == 1,
            30,
            "the first claim",
        )
    with pytest.raises(psycopg.errors.RaiseException, match="no workers today"):
        await asyncio.wait_for(run, 30)
    assert (await fetch_job(db, job))["state"] == "ready"
    assert await rows(db, "SELECT outcome FROM sluice.job_attempts WHERE job_id = %s", job) == [
        {"outcome": "released"}
    ]
    assert not worker.started.is_set()


@pytest.mark.parametrize("prepare", ["0", "1"])
def test_an_unreachable_database_fails_at_once(spawn_worker, prepare):
    """No probe connects first (none at all with SLUICE_DB_PREPARE=0; with 1 it
    starts after the first claim), and the pool would wait its whole timeout; the
    registration's connection fails at once and ends the worker."""
    url = f"postgresql://sluice:hunter2@127.0.0.1:{free_port()}/sluice"
    proc = spawn_worker(url=url, SLUICE_DB_PREPARE=prepare)
    began = time.monotonic()
    assert proc.wait(30) == 1
    assert time.monotonic() - began < 15
    assert "Error: cannot use the database postgresql://sluice:***@127.0.0.1" in proc.output()


# --- the prepared-statement probe beside the first claim --------------------------


@pytest.fixture
def held_probe(monkeypatch):
    """The probe (prepared_statements_problem) held until the test answers it:
    `answer(None)` (prepared statements are safe) or `answer(reason)`. Restores
    the process-wide PREPARED state afterwards."""
    saved = (PREPARED.enabled, PREPARED.reason, dict(PREPARED._probed))
    started = asyncio.Event()
    verdict: asyncio.Future[str | None] | None = None

    async def probe(url: str, **kwargs: Any) -> str | None:
        nonlocal verdict
        verdict = asyncio.get_running_loop().create_future()
        started.set()
        return await verdict

    def answer(reason: str | None) -> None:
        assert verdict is not None
        verdict.set_result(reason)

    monkeypatch.setattr(sluice_db, "prepared_statements_problem", probe)
    yield started, answer
    PREPARED.enabled, PREPARED.reason, PREPARED._probed = saved


async def prepared_on(conn: psycopg.AsyncConnection) -> int:
    """How many statements psycopg prepared on this connection's server session."""
    return await scalar(
        conn, "SELECT count(*) FROM pg_prepared_statements WHERE starts_with(name, '_pg3_')"
    )


async def run_jobs(db, count: int) -> None:
    """Run `count` jobs one after another: each is inserted once the one before has
    succeeded, so each takes a claim and a completion of its own (jobs inserted
    together may share one, and a statement run fewer than PREPARE_THRESHOLD + 1
    times is never prepared)."""
    for n in range(count):
        job = await insert_job(db, "echo", payload={"n": n})
        await wait_state(db, job, "succeeded", within=30)


@pytest.mark.parametrize("problem", [None, "a pooler lost a prepared statement (26000)"])
async def test_the_first_claim_does_not_wait_for_the_probe_and_nothing_is_prepared_before_it(
    database_url, db, held_probe, problem
):
    """The probe starts once the first claim is sent; until its answer every
    connection of the worker runs its statements unprepared (safe behind a pooler),
    however often they run; then they prepare only if the probe said so."""
    started, answer = held_probe
    worker = Worker(worker_settings(pool_size=1), database_url)
    job = await insert_job(db, "echo", payload={"n": 0})
    run = asyncio.create_task(worker.run())
    try:
        await wait_state(db, job, "succeeded", within=30)
        await asyncio.wait_for(started.wait(), 30)
        assert PREPARED.pending(database_url)
        # Claims and completions run far more often than PREPARE_THRESHOLD meanwhile.
        await run_jobs(db, 3 * sluice_db.PREPARE_THRESHOLD)
        assert worker.claimer is not None and worker.completer is not None
        async with worker.claimer._pool.connection() as conn:
            assert conn.prepare_threshold is None
            assert await prepared_on(conn) == 0
        async with worker.completer._writer.connection() as conn:
            assert conn.prepare_threshold is None
            assert await prepared_on(conn) == 0

        answer(problem)
        await wait_for(lambda: not PREPARED.pending(database_url), 10, "the probe's answer")
        await run_jobs(db, 3 * sluice_db.PREPARE_THRESHOLD)
        for connection in (worker.claimer._pool.connection, worker.completer._writer.connection):
            async with connection() as conn:
                await conn.execute("SELECT 1")  # a statement after the answer
                if problem is None:
                    assert conn.prepare_threshold == sluice_db.PREPARE_THRESHOLD
                    assert await prepared_on(conn) > 0
                else:
                    assert conn.prepare_threshold is None
                    assert await prepared_on(conn) == 0
        assert PREPARED.enabled is (problem is None)
    finally:
        worker.stop(hurry=True)
        await asyncio.wait_for(run, 30)


async def test_a_probe_that_fails_leaves_statements_unprepared_and_is_tried_again(
    database_url, db, monkeypatch
):
    saved = (PREPARED.enabled, PREPARED.reason, dict(PREPARED._probed))
    probes = []

    async def failing(url: str, **kwargs: Any) -> str | None:
        probes.append(asyncio.current_task())
        raise psycopg.OperationalError("the database went away")

    monkeypatch.setattr(sluice_db, "prepared_statements_problem", failing)
    worker = Worker(worker_settings(pool_size=1), database_url)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.started.wait(), 30)
        await wait_for(lambda: probes and not PREPARED.pending(database_url), 10, "the probe")
        await run_jobs(db, 3 * sluice_db.PREPARE_THRESHOLD)
        assert worker.claimer is not None
        async with worker.claimer._pool.connection() as conn:
            assert conn.prepare_threshold is None
            assert await prepared_on(conn) == 0
        # Nothing known about the URL: the next connection opened for it probes again
        # (the worker may open one of its own meanwhile, and probe then too).
        assert asyncio.current_task() not in probes
        with pytest.raises(psycopg.OperationalError):
            await sluice_db.connect(database_url)
        assert asyncio.current_task() in probes
    finally:
        worker.stop(hurry=True)
        await asyncio.wait_for(run, 30)
        PREPARED.enabled, PREPARED.reason, PREPARED._probed = saved
