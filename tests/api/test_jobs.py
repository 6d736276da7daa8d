"""The jobs API against a real database: submit, batch, list, get, cancel, retry."""

from __future__ import annotations

import pytest

from tests.api.conftest import bearer
from tests.factories import claim, complete, fail, fetch_job, make_job

JOBS = "/api/v1/jobs"


async def test_submit_answers_201_with_the_stored_job(client, submitter, db):
    r = await client.post(
        JOBS,
        json={
            "task": "sleep",
            "payload": {"seconds": 1.5},
            "queue": "media",
            "priority": -3,
            "max_attempts": 2,
            "timeout": 30,
        },
        headers=submitter,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "ready" and job["task"] == "sleep" and job["queue"] == "media"
    assert job["payload"] == {"seconds": 1.5} and job["priority"] == -3
    assert job["max_attempts"] == 2 and job["timeout"] == 30.0 and job["tenant"] == "default"
    stored = await fetch_job(db, job["id"])
    assert stored["queue"] == "media" and stored["priority"] == -3


async def test_delay_and_run_at_schedule_the_job(client, submitter):
    delayed = (
        await client.post(JOBS, json={"task": "noop", "delay_seconds": 3600}, headers=submitter)
    ).json()
    assert delayed["state"] == "scheduled"
    at = (
        await client.post(
            JOBS, json={"task": "noop", "run_at": "2999-01-01T00:00:00Z"}, headers=submitter
        )
    ).json()
    assert at["state"] == "scheduled" and at["run_at"].startswith("2999-01-01")
    both = await client.post(
        JOBS,
        json={"task": "noop", "delay_seconds": 1, "run_at": "2999-01-01T00:00:00Z"},
        headers=submitter,
    )
    assert both.status_code == 422
    assert both.json()["errors"][0]["field"] == "delay_seconds"


async def test_idempotency_key_replays_and_refuses_a_different_body(client, submitter, db):
    body = {"task": "noop", "payload": {"n": 1}, "idempotency_key": "order-1"}
    first = await client.post(JOBS, json=body, headers=submitter)
    again = await client.post(JOBS, json=body, headers=submitter)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = await client.post(JOBS, json={**body, "payload": {"n": 2}}, headers=submitter)
    assert other.status_code == 409
    assert other.json()["errors"] == [
        {"field": "idempotency_key", "message": "was used before for a different request"}
    ]
    cur = await db.execute("SELECT count(*) FROM sluice.jobs")
    assert (await cur.fetchone())[0] == 1


async def test_idempotency_key_header(client, submitter):
    headers = {**submitter, "Idempotency-Key": "hdr-1"}
    first = await client.post(JOBS, json={"task": "noop"}, headers=headers)
    again = await client.post(JOBS, json={"task": "noop"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["idempotency_key"] == "hdr-1" and again.json()["id"] == first.json()["id"]
    clash = await client.post(
        JOBS, json={"task": "noop", "idempotency_key": "other"}, headers=headers
    )
    assert clash.status_code == 422 and clash.json()["errors"][0]["field"] == "idempotency_key"


async def test_keys_are_per_tenant(client):
    a = await client.post(
        JOBS,
        json={"task": "noop", "idempotency_key": "k"},
        headers=bearer("submitter", tenant="acme"),
    )
    b = await client.post(
        JOBS,
        json={"task": "noop", "idempotency_key": "k"},
        headers=bearer("submitter", tenant="globex"),
    )
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def test_depends_on_blocks_until_parents_succeed(client, submitter, db):
    parent = (await client.post(JOBS, json={"task": "noop"}, headers=submitter)).json()
    child = await client.post(
        JOBS, json={"task": "noop", "depends_on": [parent["id"]]}, headers=submitter
    )
    assert child.status_code == 201 and child.json()["state"] == "blocked"
    detail = (await client.get(f"{JOBS}/{child.json()['id']}", headers=submitter)).json()
    assert detail["depends_on"] == [parent["id"]]
    await claim(db, parent["id"])
    await complete(db, parent["id"])
    assert (await fetch_job(db, child.json()["id"]))["state"] == "ready"


async def test_depends_on_unknown_or_foreign_parent_is_422(client, submitter):
    foreign = (
        await client.post(JOBS, json={"task": "noop"}, headers=bearer("submitter", tenant="other"))
    ).json()
    r = await client.post(
        JOBS, json={"task": "noop", "depends_on": [foreign["id"], 999999]}, headers=submitter
    )
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["depends_on[0]", "depends_on[1]"]


async def test_depends_on_a_failed_parent_maps_the_constraint_to_the_field(client, submitter, db):
    parent = await make_job(db, "failed")
    r = await client.post(JOBS, json={"task": "noop", "depends_on": [parent]}, headers=submitter)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "depends_on"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "sleep", "payload": {"seconds": "x"}}, "payload.seconds"),
        ({"task": "sleep", "payload": {}}, "payload.seconds"),
        ({"task": "http", "payload": {"url": "ftp://nope"}}, "payload.url"),
        ({"task": "email", "payload": {"to": [], "subject": "s", "body": "b"}}, "payload.to"),
        ({"task": "noop", "priority": "high"}, "priority"),
        ({"task": "noop", "queue": "bad queue"}, "queue"),
        ({"task": "noop", "queue": "*"}, "queue"),  # workers' "every queue", never a name
        ({"task": "noop", "max_attempts": 0}, "max_attempts"),
        ({"task": "noop", "backoff_base": 10, "backoff_max": 1}, "backoff_max"),
        ({"task": "not a task name"}, "task"),
        ({"task": "noop", "surprise": 1}, "surprise"),
        ({"payload": {}}, "task"),
        ({"task": "noop", "notify": {"webhook": {"url": "not a url"}}}, "notify.webhook.url"),
        ({"task": "noop", "payload": {"a": "nul\u0000"}}, "payload.a"),
    ],
)
async def test_invalid_jobs_are_422_naming_the_field(client, submitter, body, field):
    r = await client.post(JOBS, json=body, headers=submitter)
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]], r.json()


async def test_any_well_formed_task_name_is_accepted(client, submitter):
    """The handlers of SLUICE_TASK_MODULES live in the workers; the API does not
    import them to learn their names (a worker that has the handler runs the job)."""
    r = await client.post(
        JOBS, json={"task": "reports.build", "payload": [1, 2]}, headers=submitter
    )
    assert r.status_code == 201


async def test_shell_needs_admin_and_the_setting(client, make_client, operator, admin):
    shell = {"task": "shell", "payload": {"argv": ["echo", "hi"]}}
    assert (await client.post(JOBS, json=shell, headers=operator)).status_code == 403
    assert (await client.post(JOBS, json=shell, headers=admin)).status_code == 201
    locked = await make_client(allow_shell=False)
    r = await locked.post(JOBS, json=shell, headers=admin)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "task"


async def test_secrets_are_redacted_in_responses_but_stored(client, submitter, db):
    body = {
        "task": "http",
        "payload": {"url": "https://x.example", "headers": {"Authorization": "Bearer abc"}},
        "notify": {"webhook": {"url": "https://hook.example", "secret": "s3cret"}},
    }
    job = (await client.post(JOBS, json=body, headers=submitter)).json()
    assert job["notify"]["webhook"] == {"url": "https://hook.example", "secret": "***"}
    assert job["payload"]["headers"]["Authorization"] == "***"
    stored = await fetch_job(db, job["id"])
    assert stored["notify"]["webhook"]["secret"] == "s3cret"


async def test_a_job_with_notify_writes_its_webhook_outbox_job_when_it_ends(client, submitter, db):
    """The outbox job carries the event and the secret the worker signs with. Delivery
    through sluice.core.webhooks is tested end to end once the worker branch is merged."""
    body = {
        "task": "noop",
        "notify": {
            "webhook": {"url": "https://hook.example/done", "secret": "s3cret", "on": ["succeeded"]}
        },
    }
    job = (await client.post(JOBS, json=body, headers=submitter)).json()
    await claim(db, job["id"])
    await complete(db, job["id"], result={"ok": True})
    cur = await db.execute("SELECT id, payload FROM sluice.jobs WHERE task = 'webhook'")
    [(outbox_id, payload)] = await cur.fetchall()
    assert payload["url"] == "https://hook.example/done" and payload["secret"] == "s3cret"
    assert payload["event"]["event"] == "job.succeeded"
    assert payload["event"]["job_id"] == job["id"]
    shown = (await client.get(f"{JOBS}/{outbox_id}", headers=submitter)).json()
    assert shown["payload"]["secret"] == "***"


async def test_batch_inserts_all_in_order(client, submitter, db):
    jobs = [{"task": "noop", "payload": {"i": i}} for i in range(500)]
    jobs[7] = {"task": "noop", "payload": {"i": 7}, "idempotency_key": "b-7"}
    r = await client.post(f"{JOBS}/batch", json={"jobs": jobs}, headers=submitter)
    assert r.status_code == 201, r.text
    result = r.json()
    assert result["created"] == 500 and result["existing"] == 0
    cur = await db.execute("SELECT id, (payload->>'i')::int FROM sluice.jobs ORDER BY id")
    assert [row[1] for row in await cur.fetchall()] == list(range(500))
    cur = await db.execute("SELECT id FROM sluice.jobs ORDER BY (payload->>'i')::int")
    assert [row[0] for row in await cur.fetchall()] == result["ids"]


async def test_batch_replays_keys_and_creates_the_rest(client, submitter):
    first = await client.post(
        f"{JOBS}/batch",
        json={
            "jobs": [
                {"task": "noop", "idempotency_key": "a"},
                {"task": "noop", "idempotency_key": "b"},
            ]
        },
        headers=submitter,
    )
    again = await client.post(
        f"{JOBS}/batch",
        json={
            "jobs": [
                {"task": "noop", "idempotency_key": "b"},
                {"task": "noop"},
                {"task": "noop", "idempotency_key": "a"},
            ]
        },
        headers=submitter,
    )
    assert again.status_code == 201
    a, b = first.json()["ids"]
    ids = again.json()["ids"]
    assert ids[0] == b and ids[2] == a and ids[1] not in (a, b)
    assert again.json()["created"] == 1 and again.json()["existing"] == 2
    replay = await client.post(
        f"{JOBS}/batch",
        json={"jobs": [{"task": "noop", "idempotency_key": "a"}]},
        headers=submitter,
    )
    assert replay.status_code == 200 and replay.json()["ids"] == [a]


async def test_batch_is_all_or_nothing(client, submitter, db):
    await client.post(JOBS, json={"task": "noop", "idempotency_key": "x"}, headers=submitter)
    r = await client.post(
        f"{JOBS}/batch",
        json={"jobs": [{"task": "noop"}, {"task": "noop", "priority": 5, "idempotency_key": "x"}]},
        headers=submitter,
    )
    assert r.status_code == 409
    assert r.json()["errors"][0]["field"] == "jobs[1].idempotency_key"
    bad = await client.post(
        f"{JOBS}/batch",
        json={
            "jobs": [
                {"task": "noop"},
                {"task": "sleep", "payload": {}},
                {"task": "http", "payload": {"url": "ftp://x"}},
            ]
        },
        headers=submitter,
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {
        "jobs[1].payload.seconds",
        "jobs[2].payload.url",
    }
    schema = await client.post(
        f"{JOBS}/batch",
        json={"jobs": [{"task": "noop"}, {"task": "noop", "queue": "a b"}]},
        headers=submitter,
    )
    assert schema.status_code == 422 and schema.json()["errors"][0]["field"] == "jobs[1].queue"
    cur = await db.execute("SELECT count(*) FROM sluice.jobs")
    assert (await cur.fetchone())[0] == 1


async def test_batch_rejects_a_key_repeated_inside_it(client, submitter):
    r = await client.post(
        f"{JOBS}/batch",
        json={
            "jobs": [
                {"task": "noop", "idempotency_key": "d"},
                {"task": "noop", "idempotency_key": "d"},
            ]
        },
        headers=submitter,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "jobs[1].idempotency_key"


async def test_batch_size_limit(make_client, submitter):
    small = await make_client(max_batch_jobs=3)
    r = await small.post(f"{JOBS}/batch", json={"jobs": [{"task": "noop"}] * 4}, headers=submitter)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "jobs"


async def test_list_filters_and_paginates(client, submitter, db):
    ids = [
        (
            await client.post(
                JOBS, json={"task": "noop", "queue": "q1" if i % 2 else "q2"}, headers=submitter
            )
        ).json()["id"]
        for i in range(5)
    ]
    await make_job(db, "failed", task="sleep")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "queue": "q1", **({"cursor": cursor} if cursor else {})}
        body = (await client.get(JOBS, params=params, headers=submitter)).json()
        seen += [j["id"] for j in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[3], ids[1]]
    failed = (
        await client.get(JOBS, params={"state": ["failed", "running"]}, headers=submitter)
    ).json()["items"]
    assert [j["task"] for j in failed] == ["sleep"]
    by_task = (await client.get(JOBS, params={"task": "sleep"}, headers=submitter)).json()
    assert len(by_task["items"]) == 1
    future = (
        await client.get(JOBS, params={"created_after": "2999-01-01T00:00:00Z"}, headers=submitter)
    ).json()
    assert future == {"items": [], "next_cursor": None}
    bad = await client.get(JOBS, params={"cursor": "garbage!"}, headers=submitter)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


async def test_get_shows_attempts_and_output(client, submitter, db):
    job_id = await make_job(db, "running")
    await fail(db, job_id, error="first try broke")
    await db.execute(
        "UPDATE sluice.jobs SET run_at = now(), state = 'ready' WHERE id = %s", (job_id,)
    )
    await claim(db, job_id)
    await db.execute(
        "SELECT sluice.job_complete_many('test-worker', %s, %s, %s::jsonb[], %s)",
        ([job_id], [2], ['{"rows": 3}'], ["line 1\nline 2"]),
    )
    r = await client.get(f"{JOBS}/{job_id}", headers=submitter)
    job = r.json()
    assert job["state"] == "succeeded" and job["result"] == {"rows": 3}
    assert [(a["attempt"], a["outcome"], a["error"]) for a in job["attempts"]] == [
        (1, "failed", "first try broke"),
        (2, "succeeded", None),
    ]
    assert job["output"] == "line 1\nline 2"
    assert (await client.get(f"{JOBS}/424242", headers=submitter)).status_code == 404


async def test_cancel_and_retry(client, submitter, operator, db):
    job = (await client.post(JOBS, json={"task": "noop"}, headers=submitter)).json()
    r = await client.post(f"{JOBS}/{job['id']}/cancel", headers=submitter)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    again = await client.post(f"{JOBS}/{job['id']}/cancel", headers=submitter)
    assert again.status_code == 409
    retried = await client.post(f"{JOBS}/{job['id']}/retry", headers=operator)
    assert retried.status_code == 200 and retried.json()["state"] == "ready"
    assert (await client.post(f"{JOBS}/{job['id']}/retry", headers=operator)).status_code == 409
    dead = await make_job(db, "failed")
    r = await client.post(f"{JOBS}/{dead}/retry", headers=operator)
    assert r.json()["state"] == "ready"
    cur = await db.execute("SELECT resolution FROM sluice.dead_letters WHERE job_id = %s", (dead,))
    assert (await cur.fetchone())[0] == "retried"
