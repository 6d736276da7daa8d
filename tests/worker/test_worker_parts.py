"""The worker's parts one at a time against the database: completion batches,
zombie completions, maintenance services, leader election; settings and logs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging

import pytest

from sluice.core.config import SettingsError, load
from sluice.core.durations import duration_setting
from sluice.core.logging import ContextFilter, JsonFormatter, PlainFormatter, job_id_var, redact_url
from sluice.core.protocol import Failed, Succeeded
from sluice.worker.cancelling import cancel_and_wait
from sluice.worker.completer import Completer
from sluice.worker.context import JobContext
from sluice.worker.maintenance import Contact, Maintenance, service_loop
from sluice.worker.meters import Meters
from sluice.worker.promoter import Promoter
from sluice.worker.pruner import Pruner
from sluice.worker.registry import Registry
from sluice.worker.rescuer import Rescuer, Untouched
from sluice.worker.resources import Resources
from sluice.worker.settings import WorkerSettings
from sluice.worker.writer import Writer
from tests.factories import WORKER, claim, fetch_job, insert_job, make_job, scalar
from tests.worker.helpers import claimed, wait_for, worker_settings


@pytest.fixture
async def completer(database_url):
    writer = Writer(database_url)
    completer = Completer(writer, WORKER, Meters(), batch=3, interval=0.005)
    task = asyncio.create_task(completer.run())
    yield completer
    await completer.drain()
    await cancel_and_wait([task])
    await writer.close()


async def test_completions_are_written_in_batches(db, completer):
    ids = [await make_job(db, "running") for _ in range(4)]
    failing = await make_job(db, "running", max_attempts=1)
    for job_id in ids:
        completer.record(Succeeded(claimed(job_id), json.dumps({"id": job_id})))
    completer.record(Failed(claimed(failing), "boom", True, "tail"))
    await completer.drain()
    for job_id in ids:
        job = await fetch_job(db, job_id)
        assert (job["state"], job["result"]) == ("succeeded", {"id": job_id})
    job = await fetch_job(db, failing)
    assert (job["state"], job["last_error"]) == ("failed", "boom")
    assert (
        await scalar(db, "SELECT output FROM sluice.job_attempts WHERE job_id = %s", failing)
        == "tail"
    )
    assert completer.pending() == 0


async def test_a_zombie_completion_is_ignored(db, completer):
    job_id = await make_job(db, "running", backoff_base=dt.timedelta(0))
    # The lease expires and the job is rescued, then claimed again by someone else.
    await db.execute(
        "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1s' WHERE id = %s", (job_id,)
    )
    await db.execute("SELECT * FROM sluice.job_rescue_expired()")
    await claim(db, job_id, worker="someone-else")
    ignored: list[int] = []
    completer.on_ignored = ignored.extend
    completer.record(Succeeded(claimed(job_id), json.dumps("late")))  # attempt 1, the old owner
    await completer.drain()
    job = await fetch_job(db, job_id)
    assert (job["state"], job["attempt"], job["worker_id"], job["result"]) == (
        "running",
        2,
        "someone-else",
        None,
    )
    assert ignored == [job_id]


async def test_rescuer_retries_expired_leases(db, pool):
    job_id = await make_job(db, "running", max_attempts=1)
    fresh = await make_job(db, "running")
    await db.execute(
        "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1s' WHERE id = %s", (job_id,)
    )
    assert await Rescuer(pool, interval=5).tick() == 5
    assert (await fetch_job(db, job_id))["state"] == "failed"
    assert (await fetch_job(db, fresh))["state"] == "running"


async def test_the_rescuer_waits_a_lease_after_its_leader_regains_the_database(
    db, pool, monkeypatch
):
    """A lease that ran out while the database was away is not rescued until the
    leader has had the database for a whole lease (`grace`) without a break."""
    clock = [1000.0]
    monkeypatch.setattr("sluice.worker.maintenance.time.monotonic", lambda: clock[0])
    job_id = await make_job(db, "running")
    await db.execute(
        "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1s' WHERE id = %s", (job_id,)
    )
    contact = Contact(gap=1.0)
    rescuer = Rescuer(pool, interval=5, contact=contact, grace=2.0)

    async def after(seconds: float) -> float:
        """Statements succeed every 0.5 s for `seconds`, then one rescue pass."""
        for _ in range(int(seconds / 0.5)):
            clock[0] += 0.5
            contact.ok()
        return await rescuer.tick()

    assert await rescuer.tick() == 2.0  # no contact yet: a whole lease to wait
    contact.ok()  # elected, or the database is back
    assert await after(1.5) == pytest.approx(0.5)
    assert (await fetch_job(db, job_id))["state"] == "running"
    contact.lost()  # a statement failed: the database went again
    contact.ok()
    assert await after(1.5) == pytest.approx(0.5)
    clock[0] += 1.5  # a silence longer than `gap` counts as a loss too
    contact.ok()
    assert await after(1.5) == pytest.approx(0.5)
    assert (await fetch_job(db, job_id))["state"] == "running"
    assert await after(0.5) == 5  # a lease of contact: the rescue runs
    assert (await fetch_job(db, job_id))["state"] in ("ready", "scheduled")


def test_contact_is_unknown_after_a_silence(monkeypatch):
    """A silence longer than `gap` (an event loop held up by a handler) may have
    hidden an outage: contact counts as lost until the next statement, which
    starts it afresh."""
    clock = [1000.0]
    monkeypatch.setattr("sluice.worker.maintenance.time.monotonic", lambda: clock[0])
    contact = Contact(gap=1.0)
    contact.ok()
    clock[0] += 0.5
    contact.ok()
    clock[0] += 0.5
    assert contact.held_for() == 1.0
    clock[0] += 1.0  # 1.5 s since the last statement
    assert contact.held_for() == 0.0
    contact.ok()
    clock[0] += 0.5
    assert contact.held_for() == 0.5


async def test_a_rescuer_waiting_out_its_grace_is_no_sign_of_contact(pool):
    """During an outage the rescuer's waiting ticks return without reaching the
    database; were they counted as contact, the grace would start before the
    database is back, and live workers' leases could be rescued too early."""
    contact = Contact(gap=60.0)
    rescuer = Rescuer(pool, interval=0.001, contact=contact, grace=60.0)
    assert isinstance(await rescuer.tick(), Untouched)
    ticks = 0
    third = asyncio.Event()

    async def tick() -> float:
        nonlocal ticks
        ticks += 1
        if ticks == 3:
            third.set()
        return await rescuer.tick()

    loop = asyncio.create_task(service_loop("rescuer", tick, contact))
    try:
        await asyncio.wait_for(third.wait(), 30)
        assert contact.held_for() == 0.0
    finally:
        await cancel_and_wait([loop])

    async def reached() -> float:
        return 0.001  # any other tick that returns did reach the database

    loop = asyncio.create_task(service_loop("promoter", reached, contact))
    try:
        await wait_for(lambda: contact.held_for() > 0, within=30, what="contact")
    finally:
        await cancel_and_wait([loop])


async def test_promoter_promotes_due_jobs_and_sleeps_until_the_next(db, pool):
    due = await insert_job(db, "noop", run_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    later = await insert_job(db, "noop", run_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30))
    # Due now without waiting: inserted scheduled, then its time moved into the past.
    await db.execute(
        "UPDATE sluice.jobs SET run_at = now() - interval '1 second' WHERE id = %s", (due,)
    )
    sleep = await Promoter(pool, max_sleep=2.0).tick()
    assert (await fetch_job(db, due))["state"] == "ready"
    assert (await fetch_job(db, later))["state"] == "scheduled"
    assert sleep == 2.0  # capped: the next job is 30 s away


async def test_pruner_deletes_old_finished_jobs_and_workers(db, pool):
    old = await make_job(db, "succeeded")
    recent = await make_job(db, "succeeded")
    dead = await make_job(db, "failed")  # its dead letter is unresolved: kept
    await db.execute(
        "UPDATE sluice.jobs SET finished_at = now() - interval '2 days' WHERE id IN (%s, %s)",
        (old, dead),
    )
    await db.execute("SELECT sluice.worker_register('gone', 'h', 1, '{default}', 1, '5s', null)")
    await db.execute("UPDATE sluice.workers SET heartbeat_at = now() - interval '3 days'")
    await Pruner(pool, interval=60, retention=86400, worker_retention=86400).tick()
    ids = {r[0] for r in await (await db.execute("SELECT id FROM sluice.jobs")).fetchall()}
    assert ids == {recent, dead}
    assert await scalar(db, "SELECT count(*) FROM sluice.workers") == 0


async def test_a_short_lease_is_rescued_though_every_service_sleeps_longer(db, pool):
    """Contact is lost after a silence of half a lease; the leader's own election
    statements come often enough that it lasts while every service sleeps."""
    job_id = await make_job(db, "running")
    await db.execute(
        "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1s' WHERE id = %s", (job_id,)
    )
    settings = worker_settings(
        lease_ttl=1.0,
        heartbeat_interval=0.5,
        leader_ttl=15,
        promote_interval=30,
        cron_interval=30,
        rescue_interval=0.2,
    )
    leader = Maintenance(pool, settings)
    task = asyncio.create_task(leader.run())
    try:
        await wait_for(lambda: _state_is(db, job_id, ("ready", "scheduled")), 20.0, "the rescue")
    finally:
        await cancel_and_wait([task])


async def _state_is(db, job_id: int, states: tuple[str, ...]) -> bool:
    return (await fetch_job(db, job_id))["state"] in states


async def test_one_maintenance_leader_at_a_time_and_a_clean_hand_over(db, pool):
    first = Maintenance(pool, worker_settings(worker_id="first", leader_ttl=30))
    second = Maintenance(pool, worker_settings(worker_id="second", leader_ttl=0.3))  # eager
    one = asyncio.create_task(first.run())
    await wait_for(lambda: first.leading, 30, "the first to lead")
    two = asyncio.create_task(second.run())
    await asyncio.sleep(0.4)  # several of the second's attempts
    assert not second.leading
    await cancel_and_wait([one])
    await first.resign()  # no need to wait 30 s for the lease to expire
    await wait_for(lambda: second.leading, 30, "the second to lead")
    assert await scalar(db, "SELECT holder FROM sluice.leaders") == "second"
    await cancel_and_wait([two])


def test_the_context_is_a_view_of_the_claimed_job():
    """One shape per job: the handler's context wraps the claimed job, never a copy."""
    resources = Resources(worker_settings(), None)
    job = claimed(42, attempt=2, run_id=7, node="merge", parents={"parse": [1, 2]})
    ctx = JobContext(resources, job)
    assert ctx.job is job
    assert (ctx.job_id, ctx.attempt, ctx.max_attempts, ctx.queue, ctx.task, ctx.tenant) == (
        42,
        2,
        3,
        "default",
        "t",
        "default",
    )
    assert (ctx.run_id, ctx.node, ctx.parents, ctx.index) == (7, "merge", {"parse": [1, 2]}, None)
    assert JobContext(resources, claimed(map_index=3)).parents == {}
    assert JobContext(resources, claimed(map_index=3)).index == 3


def test_settings_from_the_environment():
    settings = load(
        WorkerSettings,
        environ={
            "SLUICE_QUEUES": "a, b",
            "SLUICE_CONCURRENCY": "32",
            "SLUICE_LEASE_TTL": "1m",
            "SLUICE_ALLOW_SHELL": "1",
            "SLUICE_RETENTION": "7d",
            "SLUICE_COMPLETE_INTERVAL": "10ms",
        },
    )
    assert settings.queues == ("a", "b") and settings.concurrency == 32
    assert settings.lease_ttl == 60 and settings.allow_shell and settings.retention == 7 * 86400
    assert settings.complete_interval == pytest.approx(0.01)
    assert settings.worker_id  # generated
    assert load(WorkerSettings, environ={"SLUICE_CONCURRENCY": "4"}, concurrency=8).concurrency == 8
    assert duration_setting("1.5") == 1.5 and duration_setting("2h") == 7200


def test_settings_refuse_what_cannot_work():
    with pytest.raises(SettingsError, match="SLUICE_LEASE_TTL must be at least twice"):
        load(WorkerSettings, environ={"SLUICE_LEASE_TTL": "5s", "SLUICE_HEARTBEAT_INTERVAL": "5s"})
    with pytest.raises(SettingsError, match="SLUICE_RETENTION"):
        load(WorkerSettings, environ={"SLUICE_RETENTION": "a week"})
    with pytest.raises(SettingsError, match="SLUICE_CONCURRENCY"):
        load(WorkerSettings, environ={"SLUICE_CONCURRENCY": "0"})
    # A queue no job can be enqueued to would be waited on forever; * is every queue.
    assert load(WorkerSettings, environ={"SLUICE_QUEUES": "*"}).queues == ("*",)
    with pytest.raises(SettingsError, match="'no\\*' is not a queue name"):
        load(WorkerSettings, environ={"SLUICE_QUEUES": "mail, no*"})
    with pytest.raises(SettingsError, match="name at least one queue"):
        load(WorkerSettings, environ={"SLUICE_QUEUES": " , "})


def test_registry_names_and_duplicates():
    registry = Registry()

    async def one(payload):
        return 1

    def two(payload, ctx):
        return 2

    assert not registry.register("one", one).takes_context
    assert registry.register("two", two).takes_context and not registry.get("two").is_async
    with pytest.raises(ValueError, match="already registered"):
        registry.register("one", two)
    with pytest.raises(ImportError, match=r"cannot import 'no\.such\.module'"):
        registry.import_modules(["no.such.module"])


def _record(msg: str, **extra) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "sluice.worker", "levelname": "INFO", "msg": msg, **extra}
    )
    ContextFilter().filter(record)
    return record


def test_logs_carry_the_job_context_and_no_passwords():
    token = job_id_var.set(42)
    try:
        entry = json.loads(JsonFormatter().format(_record("hello", attempt_hint=1)))
        plain = PlainFormatter().format(_record("hello"))
    finally:
        job_id_var.reset(token)
    assert entry["msg"] == "hello" and entry["job_id"] == 42 and entry["attempt_hint"] == 1
    assert "run_id" not in entry  # absent context is left out
    assert plain.endswith("sluice.worker: hello [job_id=42]")
    assert "job_id" not in JsonFormatter().format(_record("outside a job"))
    assert redact_url("postgresql://u:pw@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert (
        redact_url("postgresql://db/x?user=u&password=pw")
        == "postgresql://db/x?user=u&password=***"
    )
    assert redact_url("postgresql://u@/x?host=/run") == "postgresql://u@/x?host=/run"
