"""The tour's examples/pipeline.yaml passes its data through results only: its
nodes run on two `sluice worker` processes that share nothing but the database
(each takes its own queue), and what `extract` returned reaches `transform`, whose
totals reach `load`'s HTTP call."""

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

PIPELINE = ROOT / "examples" / "pipeline.yaml"
# The queue each node runs on: extract and load on one worker, transform on the other.
QUEUES = {"extract": "pipe-a", "transform": "pipe-b", "load": "pipe-a"}


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
        catalog = TaskCatalog.from_settings((), False, ("examples.handlers",))
        definition = {k: source[k] for k in ("description", "params", "nodes")}
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
            spawn_worker(SLUICE_QUEUES=queue, SLUICE_TASK_MODULES="examples.handlers")

        async def ended():
            sql = "SELECT state::text FROM sluice.dag_runs WHERE id = %s"
            state = await scalar(db, sql, run_id)
            return state if state != "running" else None

        assert await wait_for(ended, 60, "the run to end") == "succeeded"
        nodes = {
            r["node"]: r
            for r in await rows(
                db,
                "SELECT j.node, j.payload, j.result, j.worker_id FROM sluice.jobs j"
                " WHERE j.run_id = %s",
                run_id,
            )
        }
        orders = nodes["extract"]["result"]["orders"]
        assert len(orders) == 25
        assert nodes["transform"]["payload"] == {"day": "2026-11-21", "orders": orders}
        totals = nodes["transform"]["result"]
        assert totals["total"] == sum(o["amount"] for o in orders)
        assert nodes["extract"]["worker_id"] != nodes["transform"]["worker_id"]
        assert _Recorder.paths == [f"/health?day=2026-11-21&total={totals['total']}"]
    finally:
        server.shutdown()
