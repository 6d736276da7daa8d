"""Operator and client functions: idempotent enqueue, cancel, queues, the
worker registry, the leader lease, the notification outbox, and the views."""

import asyncio
import json

import psycopg
import pytest

from tests.engine.notifications import drain, listen
from tests.factories import (
    WORKER,
    claim,
    complete,
    fail,
    fetch_job,
    insert_job,
    make_job,
    rows,
    scalar,
)

# -- idempotency -----------------------------------------------------------------


async def test_enqueue_twice_with_a_key_returns_the_same_job(db):
    first = await scalar(db, "SELECT sluice.enqueue('noop', idempotency_key => 'k')")
    second = await scalar(
        db, "SELECT sluice.enqueue('other', '{\"x\": 1}', idempotency_key => 'k')"
    )
    assert first == second
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 1
    assert (await fetch_job(db, first))["task"] == "noop"


async def test_idempotency_keys_are_per_tenant(db):
    a = await scalar(db, "SELECT sluice.enqueue('noop', idempotency_key => 'k', tenant => 'a')")
    b = await scalar(db, "SELECT sluice.enqueue('noop', idempotency_key => 'k', tenant => 'b')")
    assert a != b


async def test_concurrent_enqueues_with_one_key_create_one_job(db, connect):
    conns = [await connect() for _ in range(8)]
    ids = await asyncio.gather(
        *(scalar(c, "SELECT sluice.enqueue('noop', idempotency_key => 'same')") for c in conns)
    )
    assert len(set(ids)) == 1
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 1


async def test_a_plain_insert_reusing_a_key_is_refused_by_the_unique_index(db):
    await insert_job(db, idempotency_key="k")
    with pytest.raises(psycopg.errors.UniqueViolation) as error:
        await insert_job(db, idempotency_key="k")
    assert error.value.diag.constraint_name == "jobs_idempotency_key"


# -- cancel ------------------------------------------------------------------------


async def test_cancel_a_pending_job(db):
    job_id = await insert_job(db)
    assert await scalar(db, "SELECT sluice.cancel_job(%s)", job_id) is True
    job = await fetch_job(db, job_id)
    assert (job["state"], job["reason"]) == ("cancelled", "cancelled")
    assert await scalar(db, "SELECT sluice.cancel_job(%s)", job_id) is False


async def test_cancel_a_running_job_tells_its_worker_and_voids_the_lease(db, connect):
    job_id = await make_job(db, "running")
    listener = await connect()
    await listen(listener, "sluice_control")
    assert await scalar(db, "SELECT sluice.cancel_job(%s)", job_id) is True
    [message] = await drain(listener, db, "sluice_control")
    assert json.loads(message) == {"cancel": [job_id]}
    assert not await complete(db, job_id)  # the worker's late completion is ignored
    [attempt] = await rows(db, "SELECT * FROM sluice.job_attempts WHERE job_id = %s", job_id)
    assert attempt["outcome"] == "cancelled"


async def test_cancel_of_a_finished_job_changes_nothing(db):
    job_id = await make_job(db, "succeeded")
    assert await scalar(db, "SELECT sluice.cancel_job(%s)", job_id) is False
    assert (await fetch_job(db, job_id))["state"] == "succeeded"


# -- queues and workers -----------------------------------------------------------------


async def test_pause_and_resume_notify_workers(db, connect):
    listener = await connect()
    await listen(listener, "sluice_control", "sluice_jobs")
    await db.execute("SELECT sluice.pause_queue('reports')")
    await db.execute("SELECT sluice.resume_queue('reports')")
    control = await drain(listener, db, "sluice_control")
    assert [json.loads(m) for m in control] == [
        {"pause_queue": "reports"},
        {"resume_queue": "reports"},
    ]
    row = (await rows(db, "SELECT * FROM sluice.queue_stats WHERE queue = 'reports'"))[0]
    assert row["paused"] is False


async def test_worker_registry(db, connect):
    await db.execute(
        "SELECT sluice.worker_register('w1', 'host', 42, '{default}', 8, '5 seconds', '0.1')"
    )
    job_id = await make_job(db, "running")
    await db.execute("UPDATE sluice.jobs SET worker_id = 'w1' WHERE id = %s", (job_id,))
    [status] = await rows(db, "SELECT * FROM sluice.worker_status")
    assert (status["worker_id"], status["running"], status["alive"]) == ("w1", 1, True)

    listener = await connect()
    await listen(listener, "sluice_control")
    assert await scalar(db, "SELECT sluice.worker_set_paused('w1', true)") is True
    assert await scalar(db, "SELECT sluice.worker_heartbeat('w1')") is True  # paused
    assert await scalar(db, "SELECT sluice.worker_set_paused('nobody', true)") is False
    assert [json.loads(m) for m in await drain(listener, db, "sluice_control")] == [
        {"pause_worker": "w1"}
    ]

    await db.execute("SELECT sluice.worker_stop('w1')")
    [status] = await rows(db, "SELECT * FROM sluice.worker_status")
    assert status["alive"] is False
    await db.execute("UPDATE sluice.workers SET stopped_at = now() - interval '2 days'")
    assert await scalar(db, "SELECT sluice.worker_prune('1 day')") == 1


async def test_a_silent_worker_is_not_alive(db):
    await db.execute(
        "SELECT sluice.worker_register('w1', 'host', 42, '{default}', 8, '1 second', NULL)"
    )
    await db.execute("UPDATE sluice.workers SET heartbeat_at = now() - interval '10 seconds'")
    [status] = await rows(db, "SELECT * FROM sluice.worker_status")
    assert status["alive"] is False


# -- leader lease ------------------------------------------------------------------------


async def test_leader_lease(db):
    acquire = "SELECT sluice.leader_acquire('maintenance', %s, '30 seconds')"
    assert await scalar(db, acquire, "a") is True
    assert await scalar(db, acquire, "b") is False
    assert await scalar(db, acquire, "a") is True  # renewal
    await db.execute("UPDATE sluice.leaders SET expires_at = now() - interval '1 s'")
    assert await scalar(db, acquire, "b") is True  # expired: taken over
    assert await scalar(db, acquire, "a") is False
    await db.execute("SELECT sluice.leader_release('maintenance', 'b')")
    assert await scalar(db, acquire, "a") is True


async def test_only_one_of_many_concurrent_candidates_wins(db, connect):
    conns = [await connect() for _ in range(8)]
    won = await asyncio.gather(
        *(
            scalar(c, "SELECT sluice.leader_acquire('m', %s, '1 minute')", f"c{i}")
            for i, c in enumerate(conns)
        )
    )
    assert won.count(True) == 1


# -- notification outbox ----------------------------------------------------------------


async def outbox(db):
    return await rows(
        db,
        "SELECT task, payload, queue, tenant FROM sluice.jobs WHERE task IN ('webhook', 'email')",
    )


async def test_a_finished_job_with_notify_writes_its_deliveries_in_the_same_transaction(db):
    notify = {
        "webhook": {"url": "https://hooks.example.com/x", "secret": "s3cret"},
        "email": {"to": ["ops@example.com"], "on": ["failed"]},
    }
    job_id = await make_job(db, "running", notify=notify, queue="reports", max_attempts=1)
    async with db.transaction():
        await fail(db, job_id, error="disk full")
        deliveries = await outbox(db)  # visible inside the failing transaction
    assert sorted(d["task"] for d in deliveries) == ["email", "webhook"]
    webhook = next(d for d in deliveries if d["task"] == "webhook")
    assert webhook["queue"] == "reports"
    assert webhook["payload"]["url"] == "https://hooks.example.com/x"
    assert webhook["payload"]["secret"] == "s3cret"
    event = webhook["payload"]["event"]
    assert event["event"] == "job.failed"
    assert (event["job_id"], event["state"], event["attempt"]) == (job_id, "failed", 1)
    assert event["error"] == "disk full"
    email = next(d for d in deliveries if d["task"] == "email")
    assert email["payload"]["to"] == ["ops@example.com"]
    assert "job failed" in email["payload"]["subject"]
    assert "disk full" in email["payload"]["body"]


async def test_notify_on_list_filters_outcomes(db):
    notify = {"webhook": {"url": "https://x.example.com", "on": ["failed"]}}
    job_id = await make_job(db, "running", notify=notify)
    await complete(db, job_id)
    assert await outbox(db) == []


async def test_a_rolled_back_state_change_writes_no_delivery(db):
    notify = {"webhook": {"url": "https://x.example.com"}}
    job_id = await make_job(db, "running", notify=notify)
    try:
        async with db.transaction():
            await complete(db, job_id)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    assert await outbox(db) == []
    assert (await fetch_job(db, job_id))["state"] == "running"


async def test_a_run_with_notify_reports_when_it_ends(db):
    definition = '{"nodes": [{"id": "only", "task": "noop"}]}'
    run_id = await scalar(
        db,
        "SELECT sluice.dag_run_create('default', %s::jsonb, p_notify => %s::jsonb)",
        definition,
        '{"webhook": {"url": "https://x.example.com"}}',
    )
    job_id = await scalar(db, "SELECT id FROM sluice.jobs WHERE run_id = %s", run_id)
    await claim(db, job_id)
    await complete(db, job_id)
    [delivery] = await outbox(db)
    assert delivery["payload"]["event"]["event"] == "run.succeeded"
    assert delivery["payload"]["event"]["run_id"] == run_id


# -- views -----------------------------------------------------------------------------


async def test_admin_views_report_the_queues(db):
    await insert_job(db, queue="q")
    await insert_job(db, queue="q", run_at="2999-01-01")
    await make_job(db, "failed")
    running = await make_job(db, "running")
    await db.execute(
        "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s", (running,)
    )
    stats = {r["queue"]: r for r in await rows(db, "SELECT * FROM sluice.queue_stats")}
    assert (stats["q"]["ready"], stats["q"]["scheduled"]) == (1, 1)
    assert stats["q"]["oldest_ready_age"] is not None
    assert sum(r["failed"] for r in stats.values()) == 1
    assert [r["job_id"] for r in await rows(db, "SELECT * FROM sluice.running_jobs")] == [running]
    assert [r["job_id"] for r in await rows(db, "SELECT * FROM sluice.stuck_jobs")] == [running]
    assert len(await rows(db, "SELECT * FROM sluice.dead_letter_queue")) == 1
    [minute] = await rows(db, "SELECT * FROM sluice.throughput")
    assert minute["failed"] == 1
    assert [r["worker_id"] for r in await rows(db, "SELECT * FROM sluice.leases")] == [WORKER]
