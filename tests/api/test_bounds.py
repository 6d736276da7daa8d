"""Values at the edge of what the API and the database accept (issue 11, item 7):
refused at the door with a 4xx naming the field, never half-done, and whatever
the database holds, every read still answers."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from sluice.core.engine import EARLIEST, LATEST, TOO_DEEP
from sluice.core.jobs import MAX_JSON_DEPTH, RUN_AT_END, RUN_AT_MIN
from tests.factories import insert_job, rows, scalar

JOBS = "/api/v1/jobs"


def nested(depth: int) -> object:
    """A JSON value `depth` lists deep."""
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def deep_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    "run_at",
    [
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+14:00",  # year 0 (1 BC) in UTC
        "9000-01-01T00:00:00Z",  # the first instant past the range
        "1899-12-31T23:59:59.999999Z",  # the last instant before it
    ],
)
async def test_a_run_at_past_the_range_is_a_422_and_creates_nothing(client, submitter, db, run_at):
    r = await client.post(JOBS, json={"task": "noop", "run_at": run_at}, headers=submitter)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["run_at"]
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 0
    listed = await client.get(JOBS, headers=submitter)
    assert listed.status_code == 200 and listed.json()["items"] == []


async def test_the_ends_of_the_range_are_accepted_and_read_back(client, submitter):
    for run_at in (RUN_AT_MIN, RUN_AT_END - timedelta(microseconds=1)):
        r = await client.post(
            JOBS, json={"task": "noop", "run_at": run_at.isoformat()}, headers=submitter
        )
        assert r.status_code == 201, r.text
    listed = await client.get(JOBS, headers=submitter)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 2


async def _without_run_at_checks(db) -> None:
    """Drop whatever bounds run_at (table CHECKs, its domain's constraints), to store
    what an older schema or plain SQL of another era might have let in: reads must
    survive it all the same."""
    checks = await rows(
        db,
        "SELECT format('ALTER TABLE sluice.jobs DROP CONSTRAINT %I', c.conname) AS drop"
        "  FROM pg_constraint c WHERE c.conrelid = 'sluice.jobs'::regclass AND c.contype = 'c'"
        "   AND pg_get_constraintdef(c.oid) LIKE '%run_at%'"
        " UNION ALL "
        "SELECT format('ALTER DOMAIN %s DROP CONSTRAINT %I', t.oid::regtype, c.conname)"
        "  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid AND t.typtype = 'd'"
        "  JOIN pg_constraint c ON c.contypid = t.oid"
        " WHERE a.attrelid = 'sluice.jobs'::regclass AND a.attname = 'run_at'",
    )
    for check in checks:
        await db.execute(check["drop"])


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("infinity", LATEST),
        ("-infinity", EARLIEST),
        ("10000-01-01 00:00:00+00", LATEST),
        ("0044-03-15 00:00:00+00 BC", EARLIEST),
    ],
)
async def test_every_read_survives_a_time_python_cannot_hold(client, admin, db, stored, shown):
    await _without_run_at_checks(db)
    job_id = await insert_job(db, run_at=stored)
    one = await client.get(f"{JOBS}/{job_id}", headers=admin)
    assert one.status_code == 200, one.text
    assert one.json()["run_at"] == shown.isoformat().replace("+00:00", "Z")
    for path in (
        JOBS,
        f"{JOBS}?state=scheduled&state=ready",
        f"{JOBS}/wait-times",
        f"{JOBS}/throughput",
        "/api/v1/queues",
        "/api/v1/queues/default",
        "/api/v1/dlq",
    ):
        r = await client.get(path, headers=admin)
        assert r.status_code == 200, (path, r.text)


async def test_json_nested_past_the_stack_is_a_400_naming_the_body(client, submitter, db):
    for path, body in [
        (JOBS, f'{{"task": "noop", "payload": {deep_text(5000)}}}'),
        (f"{JOBS}/batch", f'{{"jobs": [{{"task": "noop", "payload": {deep_text(5000)}}}]}}'),
        ("/api/v1/runs", deep_text(5000)),
    ]:
        r = await client.post(
            path, content=body, headers={**submitter, "Content-Type": "application/json"}
        )
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert r.json()["errors"] == [
            {
                "field": "body",
                "message": f"is nested too deeply (more than {MAX_JSON_DEPTH} levels are refused)",
            }
        ]
    yaml = f"nodes: {deep_text(5000)}\n"
    r = await client.put(
        "/api/v1/dags/deep",
        content=yaml,
        headers={**submitter, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 400, r.text
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 0


async def test_json_deeper_than_the_limit_is_a_422_naming_the_field(client, submitter, db):
    ok = await client.post(
        JOBS, json={"task": "noop", "payload": nested(MAX_JSON_DEPTH)}, headers=submitter
    )
    assert ok.status_code == 201, ok.text
    r = await client.post(
        f"{JOBS}/batch",
        json={"jobs": [{"task": "noop"}, {"task": "noop", "payload": nested(MAX_JSON_DEPTH + 1)}]},
        headers=submitter,
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [
        {"field": "jobs[1].payload", "message": f"is nested deeper than {MAX_JSON_DEPTH} levels"}
    ]
    # A node's payload is stored 3 levels down in its DAG's definition.
    node = {"id": "a", "task": "noop", "payload": nested(MAX_JSON_DEPTH - 2)}
    r = await client.put("/api/v1/dags/deep", json={"nodes": [node]}, headers=submitter)
    assert r.status_code == 422 and r.json()["errors"] == [
        {
            "field": "nodes[0].payload",
            "message": f"is nested deeper than {MAX_JSON_DEPTH - 3} levels",
        }
    ]
    node["payload"] = nested(MAX_JSON_DEPTH - 3)
    r = await client.put("/api/v1/dags/deep", json={"nodes": [node]}, headers=submitter)
    assert r.status_code == 201, r.text
    run = {"definition": {"nodes": [{"id": "a", "task": "noop", "payload": nested(500)}]}}
    r = await client.post("/api/v1/runs", json=run, headers=submitter)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "definition.nodes[0].payload"
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 1


async def test_reads_survive_json_stored_deeper_than_python_decodes(client, admin, db):
    """SQL may store what the API refuses; showing it must not fail the request."""
    deep = await insert_job(db)
    await db.execute(
        "UPDATE sluice.jobs SET progress = %s::jsonb WHERE id = %s", (deep_text(5000), deep)
    )
    r = await client.get(f"{JOBS}/{deep}", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["progress"] == TOO_DEEP
    # Shallow enough to decode, deep enough to break a recursive encoder: cut off.
    done = await insert_job(db)
    await db.execute(
        "UPDATE sluice.jobs SET result = %s::jsonb WHERE id = %s", (deep_text(600), done)
    )
    r = await client.get(f"{JOBS}/{done}", headers=admin)
    assert r.status_code == 200, r.text
    shown = r.json()["result"]
    for _ in range(MAX_JSON_DEPTH):
        shown = shown[0]
    assert shown == TOO_DEEP
    assert (await client.get(JOBS, headers=admin)).status_code == 200


def test_the_deep_helpers_agree():
    assert json.loads(deep_text(3)) == nested(3)
