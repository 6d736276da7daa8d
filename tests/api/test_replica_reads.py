"""Reads that tolerate lag come from the read pool (SLUICE_READ_DATABASE_URL);
writes and reads by id, which a client makes right after its own write, from the
primary. The "replica" here is a second database whose rows differ, so each
answer shows which one it came from."""

from __future__ import annotations

import psycopg
import pytest

from tests.factories import make_job

API = "/api/v1"


@pytest.fixture
async def replica(make_client, other_database_url, admin):
    """One of everything the lists show, in the stand-in replica only."""
    replica_only = await make_client(database_url=other_database_url)
    dag = {"nodes": [{"id": "a", "task": "noop", "queue": "replica_only"}]}
    answers = [
        await replica_only.put(f"{API}/dags/replica-dag", json=dag, headers=admin),
        await replica_only.post(f"{API}/dags/replica-dag/runs", json={}, headers=admin),
        await replica_only.post(
            f"{API}/schedules",
            json={"name": "replica-schedule", "cron": "0 3 * * *", "dag": "replica-dag"},
            headers=admin,
        ),
    ]
    assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]
    async with await psycopg.AsyncConnection.connect(other_database_url, autocommit=True) as conn:
        await make_job(conn, "failed", queue="replica_only")  # a dead letter, finished now
        await make_job(conn, "running", queue="replica_only")  # waited for a worker
        await conn.execute(
            "SELECT sluice.worker_register('replica-worker', 'replica-host', 1, "
            "ARRAY['replica_only'], 1, '5 seconds', '0.1.0')"
        )
    return answers[1].json()["id"]


async def test_lists_and_statistics_read_from_the_read_pool(
    make_client, other_database_url, replica, admin
):
    client = await make_client(read_database_url=other_database_url)
    submitted = await client.post(
        f"{API}/jobs", json={"task": "noop", "queue": "primary_only"}, headers=admin
    )
    assert submitted.status_code == 201

    async def get(path: str, **params):
        answer = await client.get(f"{API}{path}", params=params, headers=admin)
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert {j["queue"] for j in (await get("/jobs"))["items"]} == {"replica_only"}
    assert {q["name"] for q in (await get("/queues"))["items"]} == {"replica_only"}
    assert [r["dag_name"] for r in (await get("/runs"))["items"]] == ["replica-dag"]
    assert [d["name"] for d in (await get("/dags"))["items"]] == ["replica-dag"]
    assert [d["queue"] for d in (await get("/dlq"))["items"]] == ["replica_only"]
    assert (await get("/dlq/size"))["size"] == 1
    assert [s["name"] for s in (await get("/schedules"))["items"]] == ["replica-schedule"]
    assert [w["worker_id"] for w in (await get("/workers"))["items"]] == ["replica-worker"]
    # Over the hour: the dead letter failed at set-up, maybe in a minute since gone.
    assert sum(m["failed"] for m in (await get("/jobs/throughput"))["items"]) == 1
    assert (await get("/jobs/wait-times"))["overall"]["jobs"] == 2


async def test_writes_and_reads_by_id_stay_on_the_primary(
    make_client, other_database_url, replica, admin
):
    client = await make_client(read_database_url=other_database_url)
    submitted = await client.post(
        f"{API}/jobs", json={"task": "noop", "queue": "primary_only"}, headers=admin
    )
    job = await client.get(f"{API}/jobs/{submitted.json()['id']}", headers=admin)
    assert job.status_code == 200 and job.json()["queue"] == "primary_only"
    # The replica's run does not exist on the primary (ids start alike in both).
    assert (await client.get(f"{API}/runs/{replica}", headers=admin)).status_code == 404
    queue = await client.get(f"{API}/queues/primary_only", headers=admin)
    assert queue.status_code == 200 and queue.json()["ready"] == 1
    assert (await client.get(f"{API}/dags/replica-dag", headers=admin)).status_code == 404
