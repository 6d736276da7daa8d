"""DLQ, queues, schedules, workers, health, readiness and metrics through the API."""

from __future__ import annotations

import json

from tests.api.conftest import bearer
from tests.factories import make_job

API = "/api/v1"


async def test_dead_letters_list_retry_discard(client, operator, db):
    first = await make_job(db, "failed", task="sleep", payload={"seconds": 1})
    second = await make_job(db, "failed", payload={"password": "hunter2"})
    listed = (await client.get(f"{API}/dlq", headers=operator)).json()
    assert [d["job_id"] for d in listed["items"]] == [second, first]
    assert listed["items"][0]["payload"] == {"password": "***"}
    assert listed["items"][0]["errors"][0]["error"] == "boom"
    page = (await client.get(f"{API}/dlq", params={"limit": 1}, headers=operator)).json()
    rest = (
        await client.get(f"{API}/dlq", params={"cursor": page["next_cursor"]}, headers=operator)
    ).json()
    assert [d["job_id"] for d in page["items"] + rest["items"]] == [second, first]
    retried = await client.post(f"{API}/dlq/{first}/retry", headers=operator)
    assert retried.status_code == 200 and retried.json()["state"] == "ready"
    discarded = await client.post(f"{API}/dlq/{second}/discard", headers=operator)
    assert discarded.status_code == 200 and discarded.json()["state"] == "failed"
    assert (await client.get(f"{API}/dlq", headers=operator)).json()["items"] == []
    assert (await client.post(f"{API}/dlq/{second}/retry", headers=operator)).status_code == 404


async def test_queues_depth_pause_resume_and_limit(client, operator, db):
    for _ in range(2):
        await make_job(db, "ready", queue="mail")
    await make_job(db, "ready", queue="mail", tenant="other")
    queues = (await client.get(f"{API}/queues", headers=operator)).json()["items"]
    [mail] = [q for q in queues if q["name"] == "mail"]
    assert mail["ready"] == 2 and not mail["paused"]  # the other tenant's job is not counted
    everything = (await client.get(f"{API}/queues", headers=bearer("admin"))).json()["items"]
    assert [q["ready"] for q in everything if q["name"] == "mail"] == [3]
    paused = await client.post(f"{API}/queues/mail/pause", headers=operator)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    cur = await db.execute("SELECT paused FROM sluice.queues WHERE name = 'mail'")
    assert (await cur.fetchone())[0] is True
    resumed = await client.post(f"{API}/queues/mail/resume", headers=operator)
    assert resumed.json()["paused"] is False
    limited = await client.put(
        f"{API}/queues/mail/concurrency", json={"limit": 4}, headers=operator
    )
    assert limited.status_code == 200 and limited.json()["concurrency_limit"] == 4
    unlimited = await client.put(
        f"{API}/queues/mail/concurrency", json={"limit": None}, headers=operator
    )
    assert unlimited.json()["concurrency_limit"] is None
    bad = await client.put(f"{API}/queues/mail/concurrency", json={"limit": 0}, headers=operator)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "limit"
    empty = (await client.get(f"{API}/queues/unused", headers=operator)).json()
    assert empty["ready"] == 0 and empty["paused"] is False


async def test_schedules_crud(client, operator, submitter):
    await client.put(
        f"{API}/dags/etl", json={"nodes": [{"id": "a", "task": "noop"}]}, headers=submitter
    )
    created = await client.post(
        f"{API}/schedules",
        json={
            "name": "nightly",
            "cron": "0 3 * * *",
            "timezone": "Europe/Paris",
            "dag": "etl",
            "dag_params": {"day": "yesterday"},
        },
        headers=operator,
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["dag"] == "etl" and schedule["job"] is None and schedule["enabled"]
    job_schedule = await client.post(
        f"{API}/schedules",
        json={
            "name": "ping",
            "cron": "*/5 * * * *",
            "job": {
                "task": "http",
                "payload": {"url": "https://x.example", "headers": {"X-Api-Key": "k"}},
                "timeout": 10,
            },
        },
        headers=operator,
    )
    assert job_schedule.status_code == 201
    assert job_schedule.json()["job"]["payload"]["headers"]["X-Api-Key"] == "***"
    assert job_schedule.json()["job"]["timeout"] == 10
    duplicate = await client.post(
        f"{API}/schedules",
        json={"name": "nightly", "cron": "0 3 * * *", "dag": "etl"},
        headers=operator,
    )
    assert duplicate.status_code == 409
    listed = (await client.get(f"{API}/schedules", headers=submitter)).json()
    assert [s["name"] for s in listed["items"]] == ["nightly", "ping"]
    updated = await client.patch(
        f"{API}/schedules/{schedule['id']}",
        json={"enabled": False, "cron": "30 4 * * 1-5"},
        headers=operator,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["enabled"] is False and updated.json()["cron"] == "30 4 * * 1-5"
    assert updated.json()["dag"] == "etl"
    switched = await client.patch(
        f"{API}/schedules/{schedule['id']}",
        json={"dag": None, "job": {"task": "noop"}},
        headers=operator,
    )
    assert switched.json()["job"]["task"] == "noop" and switched.json()["dag"] is None
    got = await client.get(f"{API}/schedules/{schedule['id']}", headers=submitter)
    assert got.json()["name"] == "nightly"
    assert (
        await client.delete(f"{API}/schedules/{schedule['id']}", headers=operator)
    ).status_code == 204
    assert (
        await client.get(f"{API}/schedules/{schedule['id']}", headers=operator)
    ).status_code == 404


async def test_schedule_validation(client, operator):
    r = await client.post(
        f"{API}/schedules",
        json={
            "name": "bad",
            "cron": "61 * * * *",
            "timezone": "Mars/Olympus",
            "job": {"task": "noop"},
            "dag": "missing",
        },
        headers=operator,
    )
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"timezone", "job", "dag"}  # the zone is checked before the expression
    r = await client.post(
        f"{API}/schedules",
        json={"name": "bad", "cron": "61 * * * *", "job": {"task": "noop"}},
        headers=operator,
    )
    assert [e["field"] for e in r.json()["errors"]] == ["cron"]
    r = await client.post(
        f"{API}/schedules",
        json={"name": "bad", "cron": "@hourly", "job": {"task": "sleep", "payload": {}}},
        headers=operator,
    )
    assert [e["field"] for e in r.json()["errors"]] == ["job.payload.seconds"]


async def test_workers_list_and_pause(client, admin, viewer, db):
    await db.execute(
        "SELECT sluice.worker_register('w-1', 'host-a', 42, ARRAY['default'], 8, "
        "'5 seconds', '0.1.0')"
    )
    workers = (await client.get(f"{API}/workers", headers=viewer)).json()["items"]
    assert [(w["worker_id"], w["alive"], w["running"]) for w in workers] == [("w-1", True, 0)]
    paused = await client.post(f"{API}/workers/w-1/pause", headers=admin)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert (await client.post(f"{API}/workers/w-1/resume", headers=admin)).json()["paused"] is False
    assert (await client.post(f"{API}/workers/nobody/pause", headers=admin)).status_code == 404


async def test_health_ready_and_metrics(client, submitter, db):
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    await client.post(f"{API}/jobs", json={"task": "noop", "queue": "metered"}, headers=submitter)
    await make_job(db, "failed")
    text = (await client.get("/metrics")).text
    assert 'sluice_queue_depth{queue="metered",state="ready"} 1.0' in text
    assert "sluice_dead_letters 1.0" in text
    assert 'sluice_jobs_enqueued_total{queue="metered",task="noop"}' in text
    assert 'route="/api/v1/jobs",status="201"' in text
    await db.execute("UPDATE sluice.alembic_version SET version_num = 'old'")
    stale = await client.get("/ready")
    assert stale.status_code == 503 and "sluice migrate" in stale.json()["problem"]


async def test_metrics_count_waiting_nodes_and_queued_runs(client, db):
    """A signal node waits and a second run of a concurrency-1 DAG queues: /metrics
    says so, read from the database at scrape time."""
    definition = {
        "name": "approval",
        "concurrency": 1,
        "nodes": [{"id": "approve", "wait": {"signal": True}}],
    }
    for _ in range(2):
        await db.execute(
            "SELECT sluice.dag_run_create('default', %s,"
            " p_dag_name => 'approval', p_dag_version => 1)",
            (json.dumps(definition),),
        )
    text = (await client.get("/metrics")).text
    assert 'sluice_dag_nodes_waiting{kind="signal"} 1.0' in text
    assert 'sluice_dag_nodes_waiting{kind="duration"} 0.0' in text
    assert "sluice_dag_runs_queued 1.0" in text
