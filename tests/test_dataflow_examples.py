"""The data-flow examples (examples/map_join.yaml, branch_when.yaml,
approval_signal.yaml) pass the definition check the API runs (structure, then
the database's check of templates, conditions and maps) and run to the end on a
real `sluice worker` with the example handlers; the approval is given with
`sluice runs signal`, as its comment says."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from sluice.auth.principal import Role
from sluice.cli import main
from sluice.core.definitions import DefinitionError, check_all
from sluice.tasks import TaskCatalog
from tests.api.conftest import api_server, bearer  # noqa: F401 - a fixture used here
from tests.factories import rows, scalar
from tests.worker.conftest import spawn_worker  # noqa: F401 - a fixture used here
from tests.worker.helpers import ROOT, wait_for

EXAMPLES = ROOT / "examples"
DEFINITION_KEYS = ("description", "params", "nodes", "timeout", "concurrency", "concurrency_key")


def catalog() -> TaskCatalog:
    return TaskCatalog.from_settings((), False, ("examples.handlers",))


async def start(db, name: str, **params: Any) -> int:
    """Check examples/`name` as the API does, then start a run of it in SQL."""
    source = yaml.safe_load((EXAMPLES / name).read_text())
    definition = {k: source[k] for k in DEFINITION_KEYS if k in source}
    stored = await check_all(db, definition, catalog())
    return await scalar(
        db,
        "SELECT sluice.dag_run_create('default', %s, %s)",
        Jsonb(stored),
        Jsonb({**source.get("params", {}), **params}),
    )


async def ended(db, run_id: int, within: float = 60) -> str:
    async def state():
        value = await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run_id)
        return value if value not in ("queued", "running") else None

    return await wait_for(state, within, f"run {run_id} to end")


async def nodes(db, run_id: int) -> dict[str, dict]:
    found = await rows(
        db,
        "SELECT node, state::text, payload, result, reason FROM sluice.jobs"
        " WHERE run_id = %s AND map_index IS NULL",
        run_id,
    )
    return {r["node"]: r for r in found}


@pytest.mark.parametrize("name", ["map_join.yaml", "branch_when.yaml", "approval_signal.yaml"])
async def test_each_example_passes_the_definition_check(db, name):
    source = yaml.safe_load((EXAMPLES / name).read_text())
    assert "name" in source and "description" in source  # `sluice submit` saves it as a DAG
    try:
        await check_all(db, {k: source[k] for k in DEFINITION_KEYS if k in source}, catalog())
    except DefinitionError as exc:
        pytest.fail(f"{name}: {exc.problems}")


async def test_map_join_and_branches_run_on_a_worker(db, spawn_worker):  # noqa: F811
    words = await start(db, "map_join.yaml")
    empty = await start(db, "map_join.yaml", text="")
    big = await start(db, "branch_when.yaml")
    small = await start(db, "branch_when.yaml", rows=50)
    spawn_worker("--concurrency", "4", SLUICE_TASK_MODULES="examples.handlers")

    # map + join: one job per line, the join sees their results in line order.
    assert await ended(db, words) == "succeeded"
    text = yaml.safe_load((EXAMPLES / "map_join.yaml").read_text())["params"]["text"]
    lines = [line for line in text.splitlines() if line]
    found = await nodes(db, words)
    assert found["split"]["result"] == {"lines": lines}
    assert found["count"]["result"] == [
        {"line": i, "words": len(line.split())} for i, line in enumerate(lines)
    ]
    words_in = sum(len(line.split()) for line in lines)
    assert found["total"]["result"] == {"lines": len(lines), "words": words_in}
    elements = await scalar(
        db, "SELECT count(*) FROM sluice.jobs WHERE run_id = %s AND map_index IS NOT NULL", words
    )
    assert elements == len(lines)
    # An empty list maps to no job, and the join gets [].
    assert await ended(db, empty) == "succeeded"
    assert (await nodes(db, empty))["total"]["result"] == {"lines": 0, "words": 0}

    # The branch: exactly one path runs, the other is skipped, report runs after it.
    for run_id, ran, skipped, rows_ in ((big, "big", "small", 1500), (small, "small", "big", 50)):
        assert await ended(db, run_id) == "succeeded"
        found = await nodes(db, run_id)
        assert found[ran]["state"] == "succeeded"
        assert (found[skipped]["state"], found[skipped]["reason"]) == ("skipped", "condition_false")
        assert found["report"]["state"] == "succeeded"
        assert found["report"]["payload"] == {"rows": rows_, ran: "succeeded", skipped: "skipped"}


def cli(api_server: str, *args: str) -> Any:  # noqa: F811
    env = {"SLUICE_API_URL": api_server, "SLUICE_TOKEN": bearer(Role.operator)["Authorization"][7:]}
    return CliRunner().invoke(main, list(args), env=env)


async def test_the_approval_waits_for_sluice_runs_signal(
    db,
    spawn_worker,  # noqa: F811
    api_server,  # noqa: F811
    tmp_path: Path,
):
    run_id = await start(db, "approval_signal.yaml", version="1.4.2")
    spawn_worker(SLUICE_TASK_MODULES="examples.handlers")

    async def waiting():
        return (await nodes(db, run_id))["approve"]["state"] == "waiting"

    await wait_for(waiting, 30, "approve to wait for its signal")
    shown = await asyncio.to_thread(cli, api_server, "runs", "show", str(run_id))
    assert shown.exit_code == 0, shown.output
    assert f"sluice runs signal {run_id} approve" in " ".join(shown.output.split())

    approval = tmp_path / "approval.json"
    approval.write_text(json.dumps({"approved_by": "ann"}))
    signalled = await asyncio.to_thread(
        cli, api_server, "runs", "signal", str(run_id), "approve", "--payload", f"@{approval}"
    )
    assert signalled.exit_code == 0, signalled.output
    assert signalled.output.strip() == f"node approve of run {run_id} succeeded"
    assert await ended(db, run_id) == "succeeded"
    found = await nodes(db, run_id)
    assert found["approve"]["result"] == {"approved_by": "ann"}
    assert found["deploy"]["result"] == {"deployed": "app-1.4.2.tar.gz", "approved_by": "ann"}

    # A second signal is refused with the API's reason; the run is untouched.
    again = await asyncio.to_thread(
        cli, api_server, "runs", "signal", str(run_id), "approve", "--payload", "{}"
    )
    assert again.exit_code == 1
    assert "409" in again.output and "not waiting for a signal" in again.output
    async with httpx.AsyncClient(base_url=api_server, headers=bearer(Role.viewer)) as http:
        answer = await http.get(f"/api/v1/runs/{run_id}")
    assert answer.json()["run"]["state"] == "succeeded"
