"""`sluice runs rerun | signal | backfill` and `sluice submit --wait` for DAGs that
carry data, as a user runs them against `sluice api` (docs/dags.md)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from click.testing import CliRunner

from sluice.auth.principal import Role
from sluice.cli import main
from sluice.core.db import connection_kwargs
from tests.api.conftest import api_server, bearer  # noqa: F401 - a fixture used here


def cli(api_server: str, *args: str, role: Role = Role.operator) -> Any:  # noqa: F811
    token = bearer(role)["Authorization"].removeprefix("Bearer ")
    return CliRunner().invoke(
        main, list(args), env={"SLUICE_API_URL": api_server, "SLUICE_TOKEN": token}
    )


def post(api_server: str, path: str, body: Any, role: Role = Role.submitter) -> dict:  # noqa: F811
    answer = httpx.post(f"{api_server}/api/v1{path}", json=body, headers=bearer(role))
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


@pytest.fixture
def sql(database_url: str):
    with psycopg.connect(database_url, **connection_kwargs()) as conn:
        yield conn


def finish(sql, run_id: int, node: str, result: Any) -> None:
    """Complete node `node` of run `run_id` (ready), as a worker would."""
    [[job_id]] = sql.execute(
        "SELECT id FROM sluice.jobs WHERE run_id = %s AND node = %s AND map_index IS NULL",
        (run_id, node),
    ).fetchall()
    sql.execute("UPDATE sluice.jobs SET queue = 'cli-lane' WHERE id = %s", (job_id,))
    [claimed] = sql.execute(
        "SELECT id, attempt FROM sluice.job_claim('cli-test', '{cli-lane}', 1, '1 minute')"
    ).fetchall()
    assert claimed[0] == job_id
    sql.execute(
        "SELECT sluice.job_complete_many('cli-test', %s, %s, %s::jsonb[])",
        ([job_id], [claimed[1]], [json.dumps(result)]),
    )


def state(sql, run_id: int, node: str) -> str:
    [[value]] = sql.execute(
        "SELECT state::text FROM sluice.jobs WHERE run_id = %s AND node = %s AND map_index IS NULL",
        (run_id, node),
    ).fetchall()
    return value


def test_runs_signal_and_its_refusals(api_server, sql, tmp_path: Path):  # noqa: F811
    run = post(api_server, "/runs", {"definition": {"nodes": [
        {"id": "approve", "wait": {"signal": True, "timeout": "1h"}},
        {"id": "deploy", "task": "noop", "depends_on": ["approve"],
         "payload": {"by": "{{ nodes.approve.result.by }}"}},
    ]}})  # fmt: skip
    run_id = str(run["id"])

    shown = cli(api_server, "runs", "show", run_id)
    assert shown.exit_code == 0, shown.output
    assert f"sluice runs signal {run_id} approve" in " ".join(shown.output.split())

    # Bad payloads are refused before anything is sent.
    bad = cli(api_server, "runs", "signal", run_id, "approve", "--payload", "{by: ann")
    assert bad.exit_code == 2 and "--payload" in bad.output and "not JSON" in bad.output
    missing = cli(api_server, "runs", "signal", run_id, "approve", "--payload", "@/no/such/file")
    assert missing.exit_code == 2 and "cannot read /no/such/file" in missing.output
    assert state(sql, int(run_id), "approve") == "waiting"
    # Viewers may not signal.
    viewer = cli(api_server, "runs", "signal", run_id, "approve", role=Role.viewer)
    assert viewer.exit_code == 1 and "403" in viewer.output

    payload = tmp_path / "approval.json"
    payload.write_text('{"by": "ann"}')
    done = cli(api_server, "runs", "signal", run_id, "approve", "--payload", f"@{payload}")
    assert done.exit_code == 0, done.output
    assert done.output == f"node approve of run {run_id} succeeded\n"
    assert state(sql, int(run_id), "deploy") == "ready"
    [[rendered]] = sql.execute(
        "SELECT payload FROM sluice.jobs WHERE run_id = %s AND node = 'deploy'", (run["id"],)
    ).fetchall()
    assert rendered == {"by": "ann"}

    again = cli(api_server, "runs", "signal", run_id, "approve")
    assert again.exit_code == 1
    assert "409" in again.output and "not waiting for a signal" in again.output
    unknown = cli(api_server, "runs", "signal", run_id, "nobody")
    assert unknown.exit_code == 1 and "404" in unknown.output


def test_runs_rerun_from_a_node(api_server, sql):  # noqa: F811
    run = post(api_server, "/runs", {"definition": {"nodes": [
        {"id": "extract", "task": "noop"},
        {"id": "load", "task": "noop", "depends_on": ["extract"],
         "payload": {"rows": "{{ nodes.extract.result.rows }}"}},
    ]}})  # fmt: skip
    run_id = run["id"]
    # Refused while a node to rerun is running (the API's 409 names it).
    finish(sql, run_id, "extract", {"rows": 1})
    sql.execute(
        "UPDATE sluice.jobs SET queue = 'cli-lane' WHERE run_id = %s AND node = 'load'", (run_id,)
    )
    sql.execute("SELECT sluice.job_claim('cli-test', '{cli-lane}', 1, '1 minute')")
    busy = cli(api_server, "runs", "rerun", str(run_id), "--from", "extract")
    assert busy.exit_code == 1
    assert "409" in busy.output and "load is running" in busy.output

    unknown = cli(api_server, "runs", "rerun", str(run_id), "--from", "nowhere")
    assert unknown.exit_code == 1 and "404" in unknown.output
    no_from = cli(api_server, "runs", "rerun", str(run_id))
    assert no_from.exit_code == 2 and "--from" in no_from.output

    sql.execute(
        "SELECT sluice.job_complete_many('cli-test', ARRAY[id], ARRAY[attempt], ARRAY['{}'::jsonb])"
        " FROM sluice.jobs WHERE run_id = %s AND node = 'load'",
        (run_id,),
    )
    done = cli(api_server, "runs", "rerun", str(run_id), "--from", "extract")
    assert done.exit_code == 0, done.output
    assert done.output == f"run {run_id} running: extract and the nodes below it run again\n"
    assert (state(sql, run_id, "extract"), state(sql, run_id, "load")) == ("ready", "blocked")


def test_runs_backfill_starts_each_occurrence_once(api_server, sql):  # noqa: F811
    headers = bearer(Role.submitter)
    nightly = {"params": {"region": "eu"}, "nodes": [
        {"id": "load", "task": "noop",
         "payload": {"day": "{{ run.occurrence }}", "region": "{{ params.region }}"}},
    ]}  # fmt: skip
    assert httpx.put(f"{api_server}/api/v1/dags/nightly", json=nightly, headers=headers).is_success
    schedule = {"name": "nightly", "cron": "0 2 * * *", "dag": "nightly"}
    post(api_server, "/schedules", schedule, role=Role.operator)

    first = cli(api_server, "runs", "backfill", "nightly",
                "--from", "2026-11-01", "--to", "2026-11-03", "--param", "region=us")  # fmt: skip
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0] == "3 runs started: 1, 2, 3"
    found = sql.execute(
        "SELECT r.occurrence, j.payload FROM sluice.dag_runs r"
        " JOIN sluice.jobs j ON j.run_id = r.id ORDER BY r.id"
    ).fetchall()
    days = [occurrence.isoformat() for occurrence, _ in found]
    assert days == [f"2026-11-0{d}T02:00:00+00:00" for d in (1, 2, 3)]
    assert [payload["region"] for _, payload in found] == ["us"] * 3
    assert found[0][1]["day"].startswith("2026-11-01T02:00:00")

    # The same range again (and one day more): only the new day starts.
    again = cli(api_server, "runs", "backfill", "nightly", "--from", "2026-11-01T00:00:00Z",
                "--to", "2026-11-04T03:00")  # fmt: skip
    assert again.exit_code == 0, again.output
    assert again.output.splitlines() == [
        "1 runs started: 4",
        "3 occurrences had a run already: 1, 2, 3",
    ]
    bad = cli(
        api_server, "runs", "backfill", "nightly", "--from", "yesterday", "--to", "2026-11-04"
    )
    assert bad.exit_code == 2 and "--from" in bad.output
    backwards = cli(
        api_server, "runs", "backfill", "nightly", "--from", "2026-11-05", "--to", "2026-11-04"
    )
    assert backwards.exit_code == 1 and "422" in backwards.output
    unscheduled = cli(
        api_server, "runs", "backfill", "nobody", "--from", "2026-11-01", "--to", "2026-11-02"
    )
    assert unscheduled.exit_code == 1 and "404" in unscheduled.output


def test_submit_wait_reports_skipped_nodes_and_the_last_results(api_server, sql, tmp_path):  # noqa: F811
    """No worker needed: a skipped root, and a signal wait signalled from SQL."""
    dag = tmp_path / "gate.yaml"
    dag.write_text(yaml.safe_dump({"params": {"go": False}, "nodes": [
        {"id": "heavy", "task": "noop", "when": "$.params.go == true"},
        {"id": "gate", "wait": {"signal": True}},
    ]}))  # fmt: skip
    outcome: dict[str, Any] = {}
    follow = threading.Thread(
        target=lambda: outcome.setdefault("result", cli(api_server, "submit", str(dag), "--wait"))
    )
    follow.start()
    try:
        for _ in range(600):
            signalled = sql.execute(
                "SELECT sluice.signal(1, 'gate', '{\"opened\": true}')"
            ).fetchone()
            if signalled and signalled[0]:
                break
            follow.join(0.05)
        else:
            pytest.fail("the gate never waited for a signal")
    finally:
        follow.join(60)
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "condition_false" in result.output
    assert result.output.rstrip().splitlines()[-1] == 'gate: {"opened": true}'


@pytest.mark.parametrize("example", ["fan_out_fan_in", "map_join", "flaky_job", "branch_when"])
def test_the_readmes_example_dags_start_through_the_api(api_server, example):  # noqa: F811
    """`sluice submit examples/<example>.yaml`, as the README's tour runs it: its
    default params (map_join's is a list of words) reach the run as they are."""
    result = cli(api_server, "submit", str(Path("examples") / f"{example}.yaml"))
    assert result.exit_code == 0, result.output
    if example == "map_join":
        run_id = int(re.search(r"run (\d+)", result.output).group(1))
        answer = httpx.get(f"{api_server}/api/v1/runs/{run_id}", headers=bearer(Role.operator))
        assert answer.json()["run"]["params"]["words"] == ["alpha", "beta", "gamma", "delta"]
