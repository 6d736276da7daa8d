"""DAG data flow through the REST API: the definition format and its checks
(every problem at once, with its place), signals, reruns, a node's result, runs
showing waits, skips and maps, queued runs, and backfills."""

from __future__ import annotations

from tests.api.conftest import bearer
from tests.factories import WORKER, claim, rows, scalar

DAGS = "/api/v1/dags"
RUNS = "/api/v1/runs"


def places(response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {e["field"]: e["message"] for e in response.json()["errors"]}


async def finish(db, job_id, result=None):
    from psycopg.types.json import Jsonb

    await claim(db, job_id)
    await db.execute(
        "SELECT sluice.job_complete_many(%s, %s, '{1}', %s::jsonb[])",
        (WORKER, [job_id], [Jsonb(result)]),
    )


async def node_job(db, run_id, node):
    return await scalar(
        db,
        "SELECT id FROM sluice.jobs WHERE run_id = %s AND node = %s AND map_index IS NULL",
        run_id,
        node,
    )


# -- the definition ------------------------------------------------------------------


async def test_a_data_flow_definition_is_stored_normalised(client, submitter):
    definition = {
        "params": {"day": "2026-11-21"},
        "timeout": "2h",
        "concurrency": 2,
        "concurrency_key": "{{ params.customer }}",
        "nodes": [
            {"id": "split", "task": "noop"},
            {
                "id": "parse",
                "task": "noop",
                "depends_on": ["split"],
                "map": "{{ nodes.split.result.files }}",
                "payload": {"file": "{{ item }}"},
            },
            {
                "id": "merge",
                "task": "noop",
                "depends_on": ["parse"],
                "trigger": "all_done",
                "when": '$.nodes.parse.state == "succeeded"',
            },
            {
                "id": "approve",
                "depends_on": ["merge"],
                "wait": {"signal": True, "timeout": "24h", "on_timeout": "skip"},
            },
            {"id": "cool", "depends_on": ["approve"], "wait": {"for": "10m"}},
        ],
    }
    r = await client.put(f"{DAGS}/files", json=definition, headers=submitter)
    assert r.status_code == 201, r.text
    stored = r.json()["definition"]
    assert {k: stored[k] for k in ("params", "timeout", "concurrency", "concurrency_key")} == {
        "params": {"day": "2026-11-21"},
        "timeout": 7200.0,
        "concurrency": 2,
        "concurrency_key": "{{ params.customer }}",
    }
    nodes = {n["id"]: n for n in stored["nodes"]}
    assert nodes["parse"]["map"] == "{{ nodes.split.result.files }}"
    assert "trigger" not in nodes["parse"]  # the default is left out
    assert (nodes["merge"]["trigger"], nodes["merge"]["when"]) == (
        "all_done",
        '$.nodes.parse.state == "succeeded"',
    )
    assert (nodes["approve"]["task"], nodes["approve"]["wait"]) == (
        "sluice.wait",
        {"signal": True, "timeout": 86400.0, "on_timeout": "skip"},
    )
    assert nodes["cool"]["wait"] == {"for": 600.0}


async def test_every_structural_problem_is_reported_at_once_with_its_place(client, submitter):
    definition = {
        "concurrency_key": "{{ params.x }}",
        "timeout": "soon",
        "nodes": [
            {"id": "a", "task": "noop", "trigger": "most_success"},
            {"id": "b", "task": "noop", "wait": {"for": "1m"}},
            {"id": "c", "wait": {"for": "1m", "signal": True}},
            {"id": "d", "wait": {"signal": True, "on_timeout": "skip"}},
            {"id": "e", "wait": {"for": "1m"}, "map": [1]},
            {"id": "f", "task": "noop", "map": 5, "when": 3},
            {"id": "g", "task": "sluice.wait"},
        ],
    }
    found = places(await client.put(f"{DAGS}/bad", json=definition, headers=submitter))
    assert found == {
        "concurrency_key": "needs concurrency",
        "timeout": "bad duration 'soon' (write 30s, 10m, 24h; at most 10 years)",
        "nodes[0].trigger": (
            "must be one of all_success, all_done, one_success, one_failed, none_failed"
        ),
        "nodes[1].task": "a wait node runs no task",
        "nodes[2].wait": (
            "wait for a duration (`for`) or for a signal (`signal: true`): one of them"
        ),
        "nodes[3].wait.on_timeout": "needs a timeout",
        "nodes[4].map": "a wait node cannot map",
        "nodes[5].map": (
            'must be a list, or one template that gives a list ("{{ nodes.ID.result }}")'
        ),
        "nodes[5].when": "must be a SQL/JSON path predicate (a string)",
        "nodes[6].task": "is reserved: write `wait: {...}` instead",
    }


async def test_every_data_flow_problem_is_reported_at_once_with_its_place(client, submitter):
    definition = {
        "concurrency": 1,
        "concurrency_key": "{{ nodes.a.result }}",
        "nodes": [
            {"id": "a", "task": "noop", "when": "$.nodes.a.result >"},
            {
                "id": "b",
                "task": "noop",
                "depends_on": ["a"],
                "payload": {"x": "{{ nodes.zz.result }}"},
            },
            {"id": "c", "task": "noop", "payload": {"x": "{{ nodes.b.result }}"}},
            {"id": "d", "task": "noop", "depends_on": ["a"], "map": "files: {{ nodes.a.result }}"},
            {"id": "e", "task": "noop", "depends_on": ["d"], "map": "{{ item }}"},
            {
                "id": "f",
                "http": {"url": "https://x/{{ nodes.c.result }}"},
                "depends_on": ["a"],
            },
        ],
    }
    found = places(await client.put(f"{DAGS}/bad", json=definition, headers=submitter))
    assert found.keys() == {
        "concurrency_key",
        "nodes[0].when",
        "nodes[1].payload.x",
        "nodes[2].payload.x",
        "nodes[3].map",
        "nodes[4].map",
        "nodes[5].http.url",
    }
    assert found["concurrency_key"].endswith("a concurrency key may only use params and run")
    assert found["nodes[0].when"].startswith("does not parse as a SQL/JSON path")
    assert found["nodes[1].payload.x"] == 'template {{ nodes.zz.result }} names unknown node "zz"'
    assert "is not an ancestor of" in found["nodes[2].payload.x"]
    assert found["nodes[3].map"].startswith("must be a list, or one template")
    assert "a map inside a map is not supported" in found["nodes[4].map"]
    assert 'node "c" is not an ancestor of "f"' in found["nodes[5].http.url"]


async def test_a_run_without_a_parameter_its_templates_need_is_a_422_on_params(client, submitter):
    definition = {"nodes": [{"id": "a", "task": "noop", "payload": {"d": "{{ params.day }}"}}]}
    r = await client.post(RUNS, json={"definition": definition}, headers=submitter)
    assert r.status_code == 422, r.text
    [error] = r.json()["errors"]
    assert error["field"] == "params"
    assert "node a: template {{ params.day }} at payload.d" in error["message"]
    assert "no parameter" in error["message"]


# -- runs ------------------------------------------------------------------------------


async def test_a_run_shows_waits_skips_maps_and_results(client, submitter, db):
    definition = {
        "nodes": [
            {"id": "split", "task": "noop"},
            {
                "id": "parse",
                "task": "noop",
                "depends_on": ["split"],
                "map": "{{ nodes.split.result }}",
            },
            {
                "id": "big",
                "task": "noop",
                "depends_on": ["split"],
                "when": "$.nodes.split.result.size() > 5",
            },
            {"id": "approve", "depends_on": ["split"], "wait": {"signal": True, "timeout": "1h"}},
        ]
    }
    run = (await client.post(RUNS, json={"definition": definition}, headers=submitter)).json()
    await finish(db, await node_job(db, run["id"], "split"), ["a" * 150, "b" * 150])
    graph = (await client.get(f"{RUNS}/{run['id']}", headers=submitter)).json()
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert len(graph["nodes"]) == 4  # elements are counted under their node, not listed
    assert (nodes["split"]["result_preview"][:5], nodes["split"]["result_truncated"]) == (
        '["aaa',
        True,
    )
    assert nodes["parse"]["state"] == "waiting" and nodes["parse"]["waiting_for"] == "map"
    assert nodes["parse"]["map"] == {
        "total": 2,
        "scheduled": 0,
        "ready": 2,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert (nodes["big"]["state"], nodes["big"]["reason"]) == ("skipped", "condition_false")
    assert nodes["big"]["when"] == "$.nodes.split.result.size() > 5"
    assert nodes["approve"]["waiting_for"] == "signal" and nodes["approve"]["wakes_at"]
    counts = {
        k: graph["run"][k] for k in ("skipped", "waiting", "succeeded", "elements", "elements_done")
    }
    assert counts == {"skipped": 1, "waiting": 2, "succeeded": 1, "elements": 2, "elements_done": 0}
    jobs = (
        await client.get("/api/v1/jobs", params={"run_id": run["id"]}, headers=submitter)
    ).json()
    by_place = {(j["node"], j["map_index"]): j["state"] for j in jobs["items"]}
    assert by_place[("big", None)] == "skipped"
    assert (by_place[("parse", 0)], by_place[("parse", 1)]) == ("ready", "ready")
    skipped = await client.get("/api/v1/jobs", params={"state": "skipped"}, headers=submitter)
    assert [j["node"] for j in skipped.json()["items"]] == ["big"]
    whole = await client.get(f"{RUNS}/{run['id']}/nodes/split/result", headers=submitter)
    assert whole.json() == {
        "id": "split",
        "job_id": nodes["split"]["job_id"],
        "state": "succeeded",
        "result": ["a" * 150, "b" * 150],
    }
    assert (
        await client.get(f"{RUNS}/{run['id']}/nodes/nope/result", headers=submitter)
    ).status_code == 404


async def test_a_signal_through_the_api(client, submitter, operator, db):
    definition = {
        "nodes": [
            {"id": "build", "task": "noop"},
            {"id": "approve", "depends_on": ["build"], "wait": {"signal": True}},
            {
                "id": "deploy",
                "task": "noop",
                "depends_on": ["approve"],
                "payload": {"by": "{{ nodes.approve.result.by }}"},
            },
        ]
    }
    run = (await client.post(RUNS, json={"definition": definition}, headers=submitter)).json()
    signal = f"{RUNS}/{run['id']}/nodes/approve/signal"
    early = await client.post(signal, json={"payload": {"by": "ann"}}, headers=operator)
    assert early.status_code == 409, early.text
    assert (
        early.json()["message"]
        == f"node 'approve' of run {run['id']} is blocked, not waiting for a signal"
    )
    assert (await client.post(signal, json={}, headers=submitter)).status_code == 403
    await finish(db, await node_job(db, run["id"], "build"))
    r = await client.post(signal, json={"payload": {"by": "ann"}}, headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "succeeded"
    again = await client.post(signal, json={"payload": {}}, headers=operator)
    assert again.status_code == 409 and "is succeeded" in again.json()["message"]
    deploy = await rows(db, "SELECT state::text, payload FROM sluice.jobs WHERE node = 'deploy'")
    assert deploy == [{"state": "ready", "payload": {"by": "ann"}}]
    assert (
        await client.post(f"{RUNS}/{run['id']}/nodes/nope/signal", json={}, headers=operator)
    ).status_code == 404
    assert (
        await client.post(f"{RUNS}/99999/nodes/approve/signal", json={}, headers=operator)
    ).status_code == 404


async def test_a_signal_payload_over_the_result_limit_is_a_413(
    db, database_url, make_client, operator
):
    await db.execute(f'ALTER DATABASE "{db.info.dbname}" SET sluice.max_result_bytes = 100')
    client = await make_client()
    definition = {"nodes": [{"id": "approve", "wait": {"signal": True}}]}
    run = (await client.post(RUNS, json={"definition": definition}, headers=operator)).json()
    r = await client.post(
        f"{RUNS}/{run['id']}/nodes/approve/signal",
        json={"payload": {"x": "y" * 200}},
        headers=operator,
    )
    assert r.status_code == 413, r.text
    assert r.json()["errors"][0]["field"] == "payload"
    assert "more than sluice.max_result_bytes (100)" in r.json()["message"]


async def test_a_rerun_through_the_api(client, submitter, operator, db):
    definition = {
        "nodes": [{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": ["a"]}]
    }
    run = (await client.post(RUNS, json={"definition": definition}, headers=submitter)).json()
    await finish(db, await node_job(db, run["id"], "a"), 1)
    await claim(db, await node_job(db, run["id"], "b"))
    busy = await client.post(f"{RUNS}/{run['id']}/rerun", json={"from": "a"}, headers=operator)
    assert busy.status_code == 409, busy.text
    assert "b is running" in busy.json()["message"]
    unknown = await client.post(f"{RUNS}/{run['id']}/rerun", json={"from": "zz"}, headers=operator)
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "from"
    await db.execute(
        "SELECT sluice.job_complete_many(%s, %s, '{1}', '{null}'::jsonb[])",
        (WORKER, [await node_job(db, run["id"], "b")]),
    )
    r = await client.post(f"{RUNS}/{run['id']}/rerun", json={"from": "b"}, headers=operator)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["ready"], r.json()["succeeded"]) == ("running", 1, 1)


async def test_queued_runs_wait_their_turn_and_can_be_cancelled(client, submitter):
    definition = {"concurrency": 1, "nodes": [{"id": "a", "task": "noop"}]}
    await client.put(f"{DAGS}/one", json=definition, headers=submitter)
    runs = [(await client.post(f"{DAGS}/one/runs", headers=submitter)).json() for _ in range(3)]
    assert [(r["state"], r["queue_position"]) for r in runs] == [
        ("running", None),
        ("queued", 0),
        ("queued", 1),
    ]
    listed = await client.get(RUNS, params={"state": "queued"}, headers=submitter)
    assert [r["id"] for r in listed.json()["items"]] == [runs[2]["id"], runs[1]["id"]]
    cancelled = await client.post(f"{RUNS}/{runs[1]['id']}/cancel", headers=submitter)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"


async def schedule_nightly(client, operator, cron: str, **fields) -> None:
    """Schedule `n`, which starts DAG `nightly` by `cron`."""
    schedule = {"name": "n", "cron": cron, "dag": "nightly", **fields}
    r = await client.post("/api/v1/schedules", json=schedule, headers=operator)
    assert r.status_code == 201, r.text


async def test_a_backfill_starts_one_run_per_occurrence(client, submitter, operator):
    definition = {"nodes": [{"id": "a", "task": "noop", "payload": {"at": "{{ run.occurrence }}"}}]}
    await client.put(f"{DAGS}/nightly", json=definition, headers=submitter)
    missing = await client.post(
        f"{DAGS}/nightly/backfill",
        json={"from": "2026-01-01T00:00:00Z", "to": "2026-01-03T00:00:00Z"},
        headers=operator,
    )
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "schedule"
    await schedule_nightly(client, operator, "0 3 * * *")
    body = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-03T03:00:00Z"}
    r = await client.post(f"{DAGS}/nightly/backfill", json=body, headers=operator)
    assert r.status_code == 201, r.text
    assert len(r.json()["runs"]) == 3 and r.json()["existing"] == []
    again = (await client.post(f"{DAGS}/nightly/backfill", json=body, headers=operator)).json()
    assert again == {"runs": [], "existing": r.json()["runs"]}
    run = (await client.get(f"{RUNS}/{r.json()['runs'][0]}", headers=operator)).json()
    assert run["run"]["occurrence"].startswith("2026-01-01T03:00:00")
    backwards = {"from": "2026-01-03T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    assert (
        await client.post(f"{DAGS}/nightly/backfill", json=backwards, headers=operator)
    ).status_code == 422
    other = bearer("operator", tenant="other")
    assert (
        await client.post(f"{DAGS}/nightly/backfill", json=body, headers=other)
    ).status_code == 404


async def test_a_backfill_follows_the_schedulers_occurrences(client, submitter, operator, db):
    """The one rule of sluice.core.occurrences: 02:30 on the day Berlin's clocks
    go back occurs once, not at both of its instants; and a schedule stored by
    plain SQL that cannot be read is refused (409), never a 500."""
    await client.put(
        f"{DAGS}/nightly", json={"nodes": [{"id": "a", "task": "noop"}]}, headers=submitter
    )
    await schedule_nightly(client, operator, "30 2 * * *", timezone="Europe/Berlin")
    body = {"from": "2026-10-24T12:00:00Z", "to": "2026-10-26T12:00:00Z"}
    r = await client.post(f"{DAGS}/nightly/backfill", json=body, headers=operator)
    assert r.status_code == 201, r.text
    occurrences = await rows(
        db,
        "SELECT occurrence FROM sluice.dag_runs WHERE id = ANY(%s) ORDER BY occurrence",
        r.json()["runs"],
    )
    assert [o["occurrence"].isoformat() for o in occurrences] == [
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST, the first of the two
        "2026-10-26T01:30:00+00:00",
    ]
    await db.execute("UPDATE sluice.schedules SET cron = 'every day' WHERE name = 'n'")
    r = await client.post(f"{DAGS}/nightly/backfill", json=body, headers=operator)
    assert r.status_code == 409, r.text
    assert "invalid cron expression 'every day'" in r.json()["message"]
