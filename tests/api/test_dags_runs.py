"""DAG definitions and runs through the API, against a real database."""

from __future__ import annotations

import yaml

from tests.api.conftest import bearer
from tests.factories import claim, fail

DAGS = "/api/v1/dags"
RUNS = "/api/v1/runs"

CHAIN = {
    "nodes": [
        {"id": "extract", "task": "noop"},
        {
            "id": "transform",
            "task": "sleep",
            "payload": {"seconds": 0},
            "depends_on": ["extract"],
            "retry": {"max_attempts": 3, "base": "2s", "max": "1m"},
            "timeout": "5m",
        },
        {
            "id": "load",
            "http": {"url": "https://example.com/{{ params.day }}"},
            "depends_on": ["transform"],
            "queue": "io",
            "priority": 4,
        },
    ]
}


async def test_saving_versions_a_dag(client, submitter):
    first = await client.put(f"{DAGS}/etl", json=CHAIN, headers=submitter)
    assert first.status_code == 201, first.text
    dag = first.json()
    assert dag["version"] == 1 and dag["name"] == "etl"
    transform = dag["definition"]["nodes"][1]
    assert transform == {
        "id": "transform",
        "task": "sleep",
        "payload": {"seconds": 0},
        "depends_on": ["extract"],
        "queue": "default",
        "priority": 0,
        "max_attempts": 3,
        "backoff": "exponential",
        "backoff_base": 2.0,
        "backoff_max": 60.0,
        "timeout": 300.0,
    }
    same = await client.put(f"{DAGS}/etl", json=CHAIN, headers=submitter)
    assert same.status_code == 200 and same.json()["version"] == 1
    changed = {"nodes": [*CHAIN["nodes"], {"id": "tell", "task": "noop", "depends_on": ["load"]}]}
    second = await client.put(f"{DAGS}/etl", json=changed, headers=submitter)
    assert second.status_code == 201 and second.json()["version"] == 2
    assert second.json()["versions"] == [1, 2]
    old = await client.get(f"{DAGS}/etl", params={"version": 1}, headers=submitter)
    assert len(old.json()["definition"]["nodes"]) == 3
    listed = (await client.get(DAGS, headers=submitter)).json()
    assert [(d["name"], d["version"]) for d in listed["items"]] == [("etl", 2)]


async def test_a_dag_in_yaml_with_a_node_mapping(client, submitter):
    text = yaml.safe_dump(
        {
            "description": "nightly",
            "nodes": {"b": {"task": "noop", "depends_on": "a"}, "a": {"sleep": {"seconds": 1}}},
        }
    )
    r = await client.put(
        f"{DAGS}/nightly", content=text, headers={**submitter, "Content-Type": "application/yaml"}
    )
    assert r.status_code == 201, r.text
    nodes = r.json()["definition"]["nodes"]
    assert [n["id"] for n in nodes] == ["a", "b"]  # parents first
    assert nodes[0]["task"] == "sleep" and nodes[0]["payload"] == {"seconds": 1}
    assert r.json()["definition"]["description"] == "nightly"


async def test_yaml_aliases_and_bad_yaml_are_400(client, submitter):
    bomb = "a: &a [1, 2]\nb: [*a, *a]\n"
    for text in (bomb, "nodes: [unclosed"):
        r = await client.put(
            f"{DAGS}/x", content=text, headers={**submitter, "Content-Type": "application/yaml"}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "bad_request"


async def test_every_problem_is_reported_at_once_with_its_place(client, submitter):
    bad = {
        "nodes": [
            {"id": "a", "task": "sleep", "payload": {"seconds": "soon"}},
            {"id": "a", "task": "noop"},
            {"id": "b", "task": "who knows?", "depends_on": ["a", "ghost"]},
            {"id": "c", "task": "noop", "timeout": "5 minutes", "retry": {"base": "forever"}},
        ]
    }
    r = await client.put(f"{DAGS}/broken", json=bad, headers=submitter)
    assert r.status_code == 422
    problems = {(e["field"], e["message"]) for e in r.json()["errors"]}
    assert {f for f, _ in problems} == {
        "nodes[0].payload.seconds",
        "nodes[1].id",
        "nodes[2].task",
        "nodes[2].depends_on[1]",
        "nodes[3].timeout",
        "nodes[3].retry.base",
    }
    assert ("nodes[2].depends_on[1]", "unknown dependency 'ghost'") in problems
    assert ("nodes[1].id", "duplicate id 'a' (also at nodes[0])") in problems


async def test_a_cycle_is_reported_with_its_path(client, submitter):
    cyclic = {
        "nodes": [
            {"id": "start", "task": "noop"},
            {"id": "a", "task": "noop", "depends_on": ["start", "c"]},
            {"id": "b", "task": "noop", "depends_on": ["a"]},
            {"id": "c", "task": "noop", "depends_on": ["b"]},
        ]
    }
    r = await client.post(RUNS, json={"definition": cyclic}, headers=submitter)
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["message"] in {
        "cycle: a -> b -> c -> a",
        "cycle: b -> c -> a -> b",
        "cycle: c -> a -> b -> c",
    }
    assert error["field"].startswith("definition.nodes[")


async def test_starting_a_stored_dag_records_its_version(client, submitter, db):
    await client.put(f"{DAGS}/etl", json=CHAIN, headers=submitter)
    r = await client.post(
        f"{DAGS}/etl/runs", json={"params": {"day": "2024-01-31"}}, headers=submitter
    )
    assert r.status_code == 201, r.text
    run = r.json()
    assert (run["dag_name"], run["dag_version"], run["state"], run["nodes"]) == (
        "etl",
        1,
        "running",
        3,
    )
    cur = await db.execute(
        "SELECT payload FROM sluice.jobs WHERE run_id = %s AND node = 'load'", (run["id"],)
    )
    assert (await cur.fetchone())[0] == {"url": "https://example.com/2024-01-31"}
    missing = await client.post(f"{DAGS}/nope/runs", headers=submitter)
    assert missing.status_code == 404


async def test_inline_run_graph_cancel_and_retry(client, submitter, operator, db):
    r = await client.post(
        RUNS, json={"definition": CHAIN, "params": {"day": "d"}}, headers=submitter
    )
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    graph = (await client.get(f"{RUNS}/{run_id}", headers=submitter)).json()
    assert [(n["id"], n["state"]) for n in graph["nodes"]] == [
        ("extract", "ready"),
        ("transform", "blocked"),
        ("load", "blocked"),
    ]
    assert graph["edges"] == [
        {"parent": "extract", "child": "transform"},
        {"parent": "transform", "child": "load"},
    ]
    extract = graph["nodes"][0]["job_id"]
    await claim(db, extract)
    await fail(db, extract, retryable=False)
    failed = (await client.get(f"{RUNS}/{run_id}", headers=submitter)).json()
    assert failed["run"]["state"] == "failed"
    assert [n["state"] for n in failed["nodes"]] == ["failed", "cancelled", "cancelled"]
    retried = await client.post(f"{RUNS}/{run_id}/retry", headers=operator)
    assert retried.status_code == 200 and retried.json()["state"] == "running"
    again = (await client.get(f"{RUNS}/{run_id}", headers=submitter)).json()
    assert [n["state"] for n in again["nodes"]] == ["ready", "blocked", "blocked"]
    cancelled = await client.post(f"{RUNS}/{run_id}/cancel", headers=submitter)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert (await client.post(f"{RUNS}/{run_id}/cancel", headers=submitter)).status_code == 409
    listed = (await client.get(RUNS, params={"state": "cancelled"}, headers=submitter)).json()
    assert [x["id"] for x in listed["items"]] == [run_id]


async def test_run_idempotency(client, submitter):
    body = {"definition": CHAIN, "params": {"day": "d"}, "idempotency_key": "nightly-2024-01-31"}
    first = await client.post(RUNS, json=body, headers=submitter)
    again = await client.post(RUNS, json=body, headers=submitter)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = await client.post(RUNS, json={**body, "params": {"day": "x"}}, headers=submitter)
    assert other.status_code == 409


async def test_shell_nodes_need_admin(client, operator, admin):
    dag = {"definition": {"nodes": [{"id": "sh", "shell": {"argv": ["true"]}}]}}
    assert (await client.post(RUNS, json=dag, headers=operator)).status_code == 403
    assert (await client.post(RUNS, json=dag, headers=admin)).status_code == 201


async def test_a_ten_thousand_node_dag_is_accepted(client, submitter, db):
    nodes = [
        {"id": f"n{i}", "task": "noop", "depends_on": [f"n{(i - 1) // 2}"] if i else []}
        for i in range(10_000)
    ]
    r = await client.post(RUNS, json={"definition": {"nodes": nodes}}, headers=submitter)
    assert r.status_code == 201, r.text[:500]
    assert r.json()["nodes"] == 10_000 and r.json()["ready"] == 1
    cur = await db.execute("SELECT count(*) FROM sluice.job_edges")
    assert (await cur.fetchone())[0] == 9_999


async def test_delete_a_dag(client, submitter, operator):
    await client.put(f"{DAGS}/gone", json=CHAIN, headers=submitter)
    assert (await client.delete(f"{DAGS}/gone", headers=submitter)).status_code == 403
    assert (await client.delete(f"{DAGS}/gone", headers=operator)).status_code == 204
    assert (await client.get(f"{DAGS}/gone", headers=operator)).status_code == 404
    assert (await client.delete(f"{DAGS}/gone", headers=operator)).status_code == 404


async def test_dags_and_runs_are_per_tenant(client, submitter):
    await client.put(f"{DAGS}/etl", json=CHAIN, headers=submitter)
    start = {"params": {"day": "d"}}
    run = (await client.post(f"{DAGS}/etl/runs", json=start, headers=submitter)).json()
    other = bearer("operator", tenant="other")
    assert (await client.get(f"{DAGS}/etl", headers=other)).status_code == 404
    assert (await client.get(f"{RUNS}/{run['id']}", headers=other)).status_code == 404
    assert (await client.post(f"{RUNS}/{run['id']}/cancel", headers=other)).status_code == 404
    assert (await client.get(RUNS, headers=other)).json()["items"] == []
    assert (
        await client.get(f"{RUNS}/{run['id']}", headers=bearer("admin", tenant="x"))
    ).status_code == 200


async def test_an_admin_pages_through_every_tenants_dag_of_one_name(client, admin):
    """The list is keyed on (name, tenant): a page ending between two tenants'
    DAGs of the same name skips neither."""
    for tenant in ("a", "b"):
        saved = await client.put(
            f"{DAGS}/etl", json=CHAIN, headers=bearer("submitter", tenant=tenant)
        )
        assert saved.status_code == 201, saved.text
    seen, cursor = [], None
    for _ in range(3):
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(DAGS, params=params, headers=admin)).json()
        seen += [(d["name"], d["tenant"]) for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [("etl", "a"), ("etl", "b")]
