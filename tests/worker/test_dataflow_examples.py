"""The data-flow examples run as their comments say, on real `sluice worker`
processes: the tour's examples/pipeline.yaml passes its data through results only
(a shell command's last line of stdout, a handler's return value) across two
workers that share nothing but the database (each takes its own queue);
map_join.yaml, branch_when.yaml and approval_signal.yaml do what they show."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import yaml
from psycopg.types.json import Jsonb

from sluice.core.definitions import check_all
from sluice.core.tasks import TaskCatalog
from tests.factories import rows, scalar
from tests.worker.helpers import ROOT, wait_for

EXAMPLES = ROOT / "examples"
PIPELINE = EXAMPLES / "pipeline.yaml"
# The queue each node runs on: extract and load on one worker, transform on the other.
QUEUES = {"extract": "pipe-a", "transform": "pipe-b", "load": "pipe-a"}


def _definition(source: dict) -> dict:
    """What `sluice submit` sends of a definition file (the name is the DAG's)."""
    return {k: v for k, v in source.items() if k != "name"}


async def _run(db, spawn_worker, name: str, params: dict | None = None) -> int:
    """Start a run of examples/<name>.yaml, as checked by the API, with one worker."""
    source = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    stored = await check_all(db, _definition(source), TaskCatalog(allow_shell=False))
    run_id = await scalar(
        db, "SELECT sluice.dag_run_create('default', %s, %s)", Jsonb(stored), Jsonb(params or {})
    )
    spawn_worker(SLUICE_TASK_MODULES="examples.handlers")
    return run_id


async def _ended(db, run_id: int) -> str:
    async def ended():
        sql = "SELECT state::text FROM sluice.dag_runs WHERE id = %s"
        state = await scalar(db, sql, run_id)
        return state if state not in ("queued", "running") else None

    return await wait_for(ended, 60, f"run {run_id} to end")


async def _nodes(db, run_id: int) -> dict[str, dict]:
    found = await rows(
        db,
        "SELECT j.node, j.state::text, j.payload, j.result, j.worker_id FROM sluice.jobs j"
        " WHERE j.run_id = %s AND j.map_index IS NULL",
        run_id,
    )
    return {r["node"]: r for r in found}


class _Recorder(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


async def test_the_pipeline_passes_data_through_results_across_two_workers(
    db, spawn_worker, tmp_path: Path
):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = yaml.safe_load(PIPELINE.read_text())
        assert "/tmp" not in PIPELINE.read_text()
        catalog = TaskCatalog(allow_shell=True)
        definition = _definition(source)
        for node in definition["nodes"]:
            node["queue"] = QUEUES[node["id"]]
        stored = await check_all(db, definition, catalog)  # its templates pass the database's check
        host = f"127.0.0.1:{server.server_address[1]}"
        run_id = await scalar(
            db,
            "SELECT sluice.dag_run_create('default', %s, %s)",
            Jsonb(stored),
            Jsonb({"day": "2026-11-21", "api_host": host}),
        )
        for queue in ("pipe-a", "pipe-b"):
            spawn_worker(
                SLUICE_QUEUES=queue,
                SLUICE_TASK_MODULES="examples.handlers",
                SLUICE_ALLOW_SHELL=1,
                SLUICE_OUTBOUND_ALLOW=host,
            )

        assert await _ended(db, run_id) == "succeeded"
        nodes = await _nodes(db, run_id)
        orders = nodes["extract"]["result"]["orders"]
        assert len(orders) == 25
        assert nodes["transform"]["payload"] == {"day": "2026-11-21", "orders": orders}
        totals = nodes["transform"]["result"]
        assert totals["total"] == sum(o["amount"] for o in orders)
        assert nodes["extract"]["worker_id"] != nodes["transform"]["worker_id"]
        assert _Recorder.paths == [f"/health?day=2026-11-21&total={totals['total']}"]
    finally:
        server.shutdown()


async def test_map_join_measures_each_word_in_its_own_job_and_joins_in_order(db, spawn_worker):
    run_id = await _run(db, spawn_worker, "map_join")
    assert await _ended(db, run_id) == "succeeded"
    nodes = await _nodes(db, run_id)
    words = ["alpha", "beta", "gamma", "delta"]
    assert [m["word"] for m in nodes["measure"]["result"]] == words
    assert nodes["join"]["result"] == {"words": words, "letters": sum(map(len, words))}
    elements = await scalar(
        db, "SELECT count(*) FROM sluice.jobs WHERE run_id = %s AND map_index IS NOT NULL", run_id
    )
    assert elements == 4


async def test_branch_when_takes_one_branch_and_reports(db, spawn_worker):
    run_id = await _run(db, spawn_worker, "branch_when", {"rows": 5000})
    assert await _ended(db, run_id) == "succeeded"
    nodes = await _nodes(db, run_id)
    assert {n: nodes[n]["state"] for n in ("big", "small", "report")} == {
        "big": "succeeded",
        "small": "skipped",
        "report": "succeeded",
    }
    assert nodes["report"]["payload"] == {"rows": 5000, "big": "succeeded"}


async def test_approval_signal_waits_for_the_signal_and_deploy_reads_it(db, spawn_worker):
    run_id = await _run(db, spawn_worker, "approval_signal")

    async def waiting():
        return (await _nodes(db, run_id))["approve"]["state"] == "waiting"

    await wait_for(waiting, 30, "approve to wait for its signal")
    assert await scalar(db, "SELECT sluice.signal(%s, 'approve', '{\"by\": \"ann\"}')", run_id)
    assert await _ended(db, run_id) == "succeeded"
    assert (await _nodes(db, run_id))["deploy"]["payload"] == {"approved_by": "ann"}
