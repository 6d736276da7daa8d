"""The REST API and a real `sluice worker` process on one database."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sluice.auth.principal import Role
from sluice.core.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.api.conftest import bearer
from tests.worker.helpers import wait_for

DIAMOND = {
    "nodes": [
        {"id": "extract", "task": "noop"},
        {"id": "clean", "task": "sleep", "payload": {"seconds": 0.05}, "depends_on": ["extract"]},
        {"id": "enrich", "task": "noop", "depends_on": ["extract"]},
        {"id": "load", "task": "noop", "depends_on": ["clean", "enrich"]},
    ]
}


async def test_a_dag_submitted_through_the_api_runs_in_order(client, spawn_worker, db):
    spawn_worker("--concurrency", "4")
    admin = bearer(Role.admin)
    created = await client.post("/api/v1/runs", json={"definition": DIAMOND}, headers=admin)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]

    async def finished():
        graph = (await client.get(f"/api/v1/runs/{run_id}", headers=admin)).json()
        return graph if graph["run"]["state"] != "running" else None

    graph = await wait_for(finished, within=30, what=f"run {run_id} to finish")
    assert graph["run"]["state"] == "succeeded"
    assert {n["id"]: n["state"] for n in graph["nodes"]} == dict.fromkeys(
        ("extract", "clean", "enrich", "load"), "succeeded"
    )
    # Every child started after each of its parents had finished.
    cur = await db.execute(
        "SELECT count(*) FROM sluice.job_edges e "
        "JOIN sluice.jobs p ON p.id = e.parent_id JOIN sluice.jobs c ON c.id = e.child_id "
        "WHERE c.run_id = %s AND c.started_at < p.finished_at",
        (run_id,),
    )
    assert await cur.fetchone() == (0,)
    assert len(graph["edges"]) == 4


class Receiver:
    """A webhook receiver on localhost that records each delivery."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        received = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sluice"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


async def test_a_jobs_webhook_arrives_signed(client, spawn_worker, receiver, db):
    # The receiver listens on loopback, which outbound requests may reach only when allowed.
    spawn_worker(SLUICE_OUTBOUND_ALLOW=f"127.0.0.1:{receiver.server.server_address[1]}")
    secret = "webhook-secret-for-the-test"
    notify = {"webhook": {"url": receiver.url, "secret": secret, "on": ["succeeded"]}}
    response = await client.post(
        "/api/v1/jobs",
        json={"task": "noop", "queue": "default", "notify": notify},
        headers=bearer(Role.submitter),
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert response.json()["notify"]["webhook"]["secret"] != secret  # redacted in responses

    await wait_for(lambda: receiver.deliveries, within=30, what="the webhook delivery")
    headers, body = receiver.deliveries[0]
    assert verify(secret, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify("another-secret", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify(
        secret,
        headers[TIMESTAMP_HEADER],
        body.replace(b"succeeded", b"failed"),
        headers[SIGNATURE_HEADER],
    )
    event = json.loads(body)
    assert (event["event"], event["job_id"], event["state"]) == (
        "job.succeeded",
        job_id,
        "succeeded",
    )
    assert event["attempt"] == 1 and event["finished_at"]

    # The delivery was one outbox job that succeeded on its first attempt.
    async def delivered():
        cur = await db.execute(
            "SELECT state::text, attempt, payload -> 'event' ->> 'job_id' FROM sluice.jobs "
            "WHERE task = 'webhook'"
        )
        rows = await cur.fetchall()
        return rows if rows and rows[0][0] == "succeeded" else None

    assert await wait_for(delivered, within=30, what="the outbox job") == [
        ("succeeded", 1, str(job_id))
    ]
    assert len(receiver.deliveries) == 1
