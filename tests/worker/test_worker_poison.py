"""Rows holding values the database accepts but a worker cannot use: a job
whose row cannot be decoded fails alone, without retry, and the worker runs
on; one row that makes a maintenance statement fail is set aside, and the
promoter, rescuer and pruner go on with every other row."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal

import pytest

from sluice.worker.maintenance import service_loop
from sluice.worker.promoter import Promoter
from sluice.worker.pruner import Pruner
from sluice.worker.rescuer import Rescuer
from tests.factories import fetch_job, insert_job, make_job, rows, scalar
from tests.worker.helpers import wait_for, wait_let_go, wait_state

# Values PostgreSQL accepts that Python cannot represent.
UNDECODABLE = {
    "run_at -infinity": ("run_at", "'-infinity'"),
    "run_at BC": ("run_at", "'0044-03-15 BC'"),
    "timeout 100000000 years": ("timeout", "'100000000 years'"),
    "payload nested 5000 deep": ("payload", "repeat('[', 5000) || repeat(']', 5000)"),
}


async def drop_checks(db, column: str) -> None:
    """Drop the CHECKs on sluice.jobs.`column`, the table's and its domain's, so a
    test can hold a row from before they existed (or one a CHECK misses)."""
    checks = await rows(
        db,
        "SELECT format('ALTER TABLE sluice.jobs DROP CONSTRAINT %%I', conname) AS sql "
        "  FROM pg_constraint "
        " WHERE conrelid = 'sluice.jobs'::regclass AND contype = 'c' "
        "   AND pg_get_constraintdef(oid) ~ %s "
        "UNION ALL "
        "SELECT format('ALTER DOMAIN %%s DROP CONSTRAINT %%I', t.oid::regtype, c.conname) "
        "  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "  JOIN pg_constraint c ON c.contypid = t.oid "
        " WHERE a.attrelid = 'sluice.jobs'::regclass AND a.attname = %s",
        rf"\m{column}\M",
        column,
    )
    for check in checks:
        await db.execute(check["sql"])


async def insert_unchecked(db, column: str, value_sql: str, task: str = "echo") -> int:
    """Insert a job holding `value_sql` in `column`, past any CHECK that would
    now refuse it."""
    await drop_checks(db, column)
    kind = await scalar(
        db,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'sluice.jobs'::regclass AND attname = %s",
        column,
    )
    return await scalar(
        db,
        f"INSERT INTO sluice.jobs (task, {column}, max_attempts) "  # noqa: S608 - ours
        f"VALUES (%s, ({value_sql})::text::{kind}, 3) RETURNING id",
        task,
    )


async def readable(db, job_id: int) -> dict:
    """The columns of a job a test can read whatever its other values."""
    [job] = await rows(
        db,
        "SELECT state::text, attempt, reason, last_error, "
        "       (SELECT count(*) FROM sluice.dead_letters d WHERE d.job_id = j.id) AS dead "
        "FROM sluice.jobs j WHERE id = %s",
        job_id,
    )
    return job


async def refuse_rows(db, table: str, when: str, event: str = "UPDATE") -> None:
    """A trigger that fails every `event` of the rows matching `when`: a row the
    engine's statements cannot process (a user's own trigger, a value a newer
    CHECK forbids)."""
    await db.execute("""
        CREATE OR REPLACE FUNCTION public.refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'poisoned row %', OLD.id; END $$""")
    await db.execute(
        f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON {table} FOR EACH ROW "
        f"WHEN ({when}) EXECUTE FUNCTION public.refuse_row()"
    )


# -- the claimer -----------------------------------------------------------------


async def test_jobs_whose_rows_cannot_be_decoded_fail_alone_and_the_worker_runs_on(
    db, start_worker
):
    before = await insert_job(db, "echo")
    bad = {name: await insert_unchecked(db, *spec) for name, spec in UNDECODABLE.items()}
    after = await insert_job(db, "echo")
    worker = await start_worker(concurrency=10)  # one claim takes them all
    for job_id in (before, after):
        await wait_state(db, job_id, "succeeded")
    for name, job_id in bad.items():
        await wait_state(db, job_id, "failed")
        job = await readable(db, job_id)
        column = UNDECODABLE[name][0]
        assert (job["attempt"], job["reason"], job["dead"]) == (1, "non_retryable", 1), name
        assert job["last_error"].startswith("this job cannot be run: its row holds a value")
        assert f"({column}: " in job["last_error"], (name, job["last_error"])
    deep = await readable(db, bad["payload nested 5000 deep"])
    assert "JSON nested too deeply" in deep["last_error"]
    # Nothing of the worker stopped: it claims and runs what comes next.
    later = await insert_job(db, "echo")
    await wait_state(db, later, "succeeded")
    await wait_let_go(worker)


async def test_a_worker_process_survives_a_row_it_cannot_decode(db, spawn_worker):
    proc = spawn_worker("--concurrency", "4")
    bad = await insert_unchecked(db, "run_at", "'-infinity'")
    await wait_state(db, bad, "failed", within=20)
    good = await insert_job(db, "echo")
    await wait_state(db, good, "succeeded", within=20)
    assert proc.proc.poll() is None, proc.output()
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 0, proc.output()
    assert f"job {bad} attempt 1 failed without running" in proc.output()


# -- maintenance ---------------------------------------------------------------------


async def due_scheduled(db, *payloads) -> list[int]:
    ids = [
        await insert_job(db, payload=p, run_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        for p in payloads
    ]
    await db.execute(
        "UPDATE sluice.jobs SET run_at = now() - interval '1 second' WHERE id = ANY(%s)", (ids,)
    )
    return ids


async def test_a_job_the_promoter_cannot_promote_is_set_aside(db, pool):
    poisoned, *good = await due_scheduled(db, {"poison": True}, {}, {})
    await refuse_rows(db, "sluice.jobs", "OLD.payload ? 'poison' AND NEW.state = 'ready'")
    promoter = Promoter(pool, max_sleep=2.0)
    assert await promoter.tick() == 2.0
    assert [(await fetch_job(db, i))["state"] for i in good] == ["ready", "ready"]
    job = await fetch_job(db, poisoned)
    assert (job["state"], job["reason"]) == ("failed", "non_retryable")
    assert job["last_error"] == (
        f"the maintenance leader could not promote this job: poisoned row {poisoned}"
    )
    assert await scalar(db, "SELECT count(*) FROM sluice.dead_letter_queue") == 1
    later = await due_scheduled(db, {})
    await promoter.tick()  # the next pass is a plain batch again
    assert (await fetch_job(db, later[0]))["state"] == "ready"


async def test_a_job_that_cannot_even_be_failed_is_reported_once_and_skipped(db, pool, caplog):
    stuck, good = await due_scheduled(db, {"poison": True}, {})
    await refuse_rows(db, "sluice.jobs", "OLD.payload ? 'poison'")
    promoter = Promoter(pool, max_sleep=2.0)
    with caplog.at_level(logging.ERROR, logger="sluice.maintenance"):
        await promoter.tick()
        later = await due_scheduled(db, {})
        await promoter.tick()
    assert (await fetch_job(db, good))["state"] == "ready"
    assert (await fetch_job(db, later[0]))["state"] == "ready"
    assert (await fetch_job(db, stuck))["state"] == "scheduled"  # for an operator to fix
    reports = [r.getMessage() for r in caplog.records if f"job {stuck} " in r.getMessage()]
    assert len(reports) == 1 and "stays as it is until its row is fixed" in reports[0]


async def test_a_run_at_past_year_9999_does_not_stop_the_promoter(db, pool):
    await insert_unchecked(db, "run_at", "'12000-01-01'")  # scheduled, and undecodable
    [due] = await due_scheduled(db, {})
    assert await Promoter(pool, max_sleep=2.0).tick() == 2.0
    assert (await fetch_job(db, due))["state"] == "ready"


async def expired(db, *payloads, **columns) -> list[int]:
    ids = [await make_job(db, "running", payload=p, **columns) for p in payloads]
    await db.execute(
        "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = ANY(%s)",
        (ids,),
    )
    return ids


async def test_a_job_the_rescuer_cannot_retry_is_failed_and_the_others_rescued(db, pool):
    poisoned, *good = await expired(db, {"poison": True}, {}, {}, backoff_base="0")
    await refuse_rows(
        db,
        "sluice.jobs",
        "OLD.payload ? 'poison' AND OLD.state = 'running' AND NEW.state <> 'failed'",
    )
    assert await Rescuer(pool, interval=5).tick() == 5
    for job_id in good:
        job = await fetch_job(db, job_id)
        assert (job["state"], job["attempt"]) == ("ready", 1)
    job = await fetch_job(db, poisoned)
    assert (job["state"], job["reason"]) == ("failed", "non_retryable")
    assert job["last_error"] == (
        "lease expired: worker test-worker stopped heartbeating; "
        f"the job could not be retried: poisoned row {poisoned}"
    )
    [attempt] = await rows(db, "SELECT * FROM sluice.job_attempts WHERE job_id = %s", poisoned)
    assert attempt["outcome"] == "rescued"


async def test_a_backoff_that_overflows_does_not_stop_the_rescuer(db, pool):
    [huge] = await expired(db, {})
    # The CHECKs that would refuse it go first (a row from before them).
    await drop_checks(db, "backoff_base")
    await drop_checks(db, "backoff_max")
    await db.execute(
        "UPDATE sluice.jobs SET backoff_base = '1000000 years', backoff_max = '1000000 years' "
        "WHERE id = %s",
        (huge,),
    )
    good = await expired(db, {}, backoff_base="0")
    assert await Rescuer(pool, interval=5).tick() == 5
    assert (await fetch_job(db, good[0]))["state"] == "ready"
    # Retried far in the future, or failed if that overflows: never running for good.
    assert (await fetch_job(db, huge))["state"] in ("scheduled", "failed")


async def test_a_job_the_pruner_cannot_delete_is_left_and_the_others_pruned(db, pool):
    kept, *_ = [await make_job(db, "succeeded", payload=p) for p in ({"poison": True}, {}, {})]
    await db.execute("UPDATE sluice.jobs SET finished_at = now() - interval '30 days'")
    await refuse_rows(db, "sluice.jobs", "OLD.payload ? 'poison'", event="DELETE")
    pruner = Pruner(pool, interval=60, retention=86400, worker_retention=86400)
    assert await pruner.tick() == 60
    assert await scalar(db, "SELECT array_agg(id) FROM sluice.jobs") == [kept]
    assert await pruner.tick() == 60  # again: the row is still there, still no error


async def test_an_error_in_one_pass_never_stops_a_service(caplog):
    passes = 0

    async def tick() -> float:
        nonlocal passes
        passes += 1
        if passes == 1:
            raise RuntimeError("a bug")
        return 0.0

    task = asyncio.create_task(service_loop("test", tick))
    try:
        await wait_for(lambda: passes >= 3, 30, "passes after the failing one")
    finally:
        task.cancel()
    assert "test failed; retrying" in caplog.text


@pytest.fixture(autouse=True)
def _quiet_maintenance(caplog):
    caplog.set_level(logging.WARNING, logger="sluice.maintenance")
