"""Every metric, scraped from the process that exports it, against what the database holds.

A real `sluice worker` (metrics port) and a real `sluice api` share a database
with jobs in every state: succeeded, retried then dead-lettered, running now,
rescued from a dead worker's expired lease, waiting in a queue no worker takes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluice.core.db import connection_kwargs
from sluice.core.embedded import free_port
from sluice.core.jobs import JOB_STATES as STATES
from tests.api.conftest import api_server, bearer  # noqa: F401 - a fixture used here

WORKER_ID = "metrics-test-worker"
DATABASE_GAUGES = {"sluice_queue_depth", "sluice_dead_letters", "sluice_workers_alive"}


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a /metrics page."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def by(samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """{label values: value} of one sample name, zero values left out."""
    return {
        tuple(found[label] for label in labels): value
        for found, value in samples.get(name, [])
        if value
    }


def eventually(check, within: float = 30.0):
    deadline = time.monotonic() + within
    while True:
        try:
            return check()
        except (AssertionError, httpx.TransportError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def worker(database_url: str, tmp_path: Path):
    """A `sluice worker` on queue default, its metrics on a free loopback port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        SLUICE_DATABASE_URL=database_url,
        SLUICE_WORKER_ID=WORKER_ID,
        SLUICE_METRICS_PORT=str(port),
        SLUICE_CONCURRENCY="4",
        SLUICE_RESCUE_INTERVAL="200ms",
        SLUICE_PROMOTE_INTERVAL="100ms",
        # The rescuer waits a lease after its leader's election (docs/state-machine.md,
        # "Rescue after an outage"): a short one, so the dead worker's job is rescued soon.
        SLUICE_LEASE_TTL="3s",
        SLUICE_HEARTBEAT_INTERVAL="500ms",
        SLUICE_SHUTDOWN_GRACE="1s",  # the 600 s sleep is handed back at once
    )
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "sluice"), "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        eventually(lambda: httpx.get(url, timeout=1).raise_for_status(), within=30)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(database_url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(database_url, **connection_kwargs()) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description else []


def test_every_metric_matches_the_database_on_the_process_that_exports_it(
    database_url,
    api_server,  # noqa: F811
    worker,
):
    api = httpx.Client(base_url=api_server, headers=bearer_admin(), timeout=10)
    # Through the API: counted by the API's sluice_jobs_enqueued_total.
    for _ in range(3):
        assert api.post("/api/v1/jobs", json={"task": "noop"}).status_code == 201
    assert api.post("/api/v1/jobs", json={"task": "noop", "queue": "mail"}).status_code == 201
    # Plain SQL: a job that outlives its timeout fails, is retried once, then
    # dead-lettered. (A task no worker has a handler for is not claimed at all.)
    query(
        database_url,
        "INSERT INTO sluice.jobs (task, payload, timeout, max_attempts, backoff_base) "
        """VALUES ('sleep', '{"seconds": 60}', '50 ms', 2, '0'),"""
        """       ('sleep', '{"seconds": 60}', '50 ms', 2, '0')""",
    )
    running = api.post("/api/v1/jobs", json={"task": "sleep", "payload": {"seconds": 600}})
    # A job whose worker died (claimed from a lane of its own, then given back its
    # queue): its lease expired, this worker's maintenance rescues it.
    query(database_url, "INSERT INTO sluice.jobs (task, queue) VALUES ('noop', 'lane')")
    query(database_url, "SELECT sluice.job_claim('dead-worker', '{lane}', 1, '30 s')")
    query(
        database_url,
        "UPDATE sluice.jobs SET queue = 'default', lease_expires_at = now() - interval '1 minute'"
        " WHERE queue = 'lane'",
    )

    def settled():
        states = dict(
            query(database_url, "SELECT state::text, count(*) FROM sluice.jobs GROUP BY 1")
        )
        # The rescued job ran again and succeeded; the mail one waits.
        assert states == {"succeeded": 4, "failed": 2, "running": 1, "ready": 1}, states
        running_by = query(
            database_url, "SELECT worker_id FROM sluice.jobs WHERE id = %s", running.json()["id"]
        )
        assert running_by == [(WORKER_ID,)]

    eventually(settled)

    # -- the worker: what it did ---------------------------------------------------
    def worker_matches():
        samples = scrape(worker)
        attempts = query(
            database_url,
            "SELECT j.queue, j.task, a.outcome, a.finished_at IS NOT NULL"
            "  FROM sluice.job_attempts a JOIN sluice.jobs j ON j.id = a.job_id"
            " WHERE a.worker_id = %s",
            WORKER_ID,
        )
        finished = Counter((q, t, o) for q, t, o, done in attempts if done)
        assert by(samples, "sluice_jobs_completed_total", "queue", "task", "outcome") == finished
        run_counts = Counter((q, t) for q, t, _, done in attempts if done)
        assert by(samples, "sluice_job_run_seconds_count", "queue", "task") == run_counts
        # An attempt's row is written when it ends: the running ones are jobs rows.
        running_now = query(
            database_url,
            "SELECT queue FROM sluice.jobs WHERE state = 'running' AND worker_id = %s",
            WORKER_ID,
        )
        started = Counter((q,) for q, *_ in attempts) + Counter(running_now)
        assert by(samples, "sluice_job_wait_seconds_count", "queue") == started
        assert (
            samples["sluice_worker_jobs_running"][0][1]
            == query(
                database_url,
                "SELECT count(*) FROM sluice.jobs WHERE state = 'running' AND worker_id = %s",
                WORKER_ID,
            )[0][0]
            == 1
        )
        dead_lettered = query(
            database_url,
            "SELECT j.queue, j.task, count(*) FROM sluice.dead_letters d"
            "  JOIN sluice.jobs j ON j.id = d.job_id"
            "  JOIN sluice.job_attempts a ON a.job_id = j.id AND a.attempt = j.attempt"
            " WHERE a.worker_id = %s GROUP BY 1, 2",
            WORKER_ID,
        )
        assert (
            by(samples, "sluice_jobs_dead_lettered_total", "queue", "task")
            == {(q, t): n for q, t, n in dead_lettered}
            == {("default", "sleep"): 2}
        )
        retried = query(
            database_url,
            "SELECT j.queue, j.task, count(*) FROM sluice.job_attempts a"
            "  JOIN sluice.jobs j ON j.id = a.job_id"
            " WHERE a.worker_id = %s AND a.outcome IN ('failed', 'timeout')"
            "   AND a.attempt < j.max_attempts"
            " GROUP BY 1, 2",
            WORKER_ID,
        )
        assert (
            by(samples, "sluice_job_retries_total", "queue", "task")
            == {(q, t): n for q, t, n in retried}
            == {("default", "sleep"): 2}
        )
        rescued = query(
            database_url, "SELECT count(*) FROM sluice.job_attempts WHERE outcome = 'rescued'"
        )[0][0]
        assert (
            by(samples, "sluice_jobs_rescued_total", "result")
            == {("retried",): rescued}
            == {("retried",): 1}
        )
        # Nothing it does not own: no placeholder zeros for the database's numbers.
        assert not DATABASE_GAUGES & samples.keys()
        assert "sluice_jobs_enqueued_total" not in samples

    eventually(worker_matches)

    # -- the API: the database, read at scrape time ----------------------------------
    def api_matches():
        samples = scrape(f"{api_server}/metrics")
        counts = query(
            database_url, "SELECT queue, state::text, count(*) FROM sluice.jobs GROUP BY 1, 2"
        )
        depth = {(q, s): n for q, s, n in counts}
        assert by(samples, "sluice_queue_depth", "queue", "state") == depth
        queues = {labels["queue"] for labels, _ in samples["sluice_queue_depth"]}
        assert queues == {"default", "mail"}
        assert {labels["state"] for labels, _ in samples["sluice_queue_depth"]} == set(STATES)
        assert (
            samples["sluice_dead_letters"][0][1]
            == query(
                database_url, "SELECT count(*) FROM sluice.dead_letters WHERE resolved_at IS NULL"
            )[0][0]
            == 2
        )
        assert (
            samples["sluice_workers_alive"][0][1]
            == query(database_url, "SELECT count(*) FROM sluice.worker_status WHERE alive")[0][0]
            == 1
        )
        consumers = query(database_url, "SELECT queue, consumers FROM sluice.queue_stats")
        assert (
            dict((labels["queue"], value) for labels, value in samples["sluice_queue_consumers"])
            == dict(consumers)
            == {"default": 1, "mail": 0}
        )
        oldest = dict(
            (labels["queue"], value)
            for labels, value in samples["sluice_queue_oldest_ready_seconds"]
        )
        (mail_age,) = query(
            database_url,
            "SELECT extract(epoch FROM oldest_ready_age)::float FROM sluice.queue_stats"
            " WHERE queue = 'mail'",
        )[0]
        assert abs(oldest["mail"] - mail_age) < 5 and oldest["default"] == 0
        assert by(samples, "sluice_jobs_enqueued_total", "queue", "task") == {
            ("default", "noop"): 3,
            ("mail", "noop"): 1,
            ("default", "sleep"): 1,
        }
        posts = by(samples, "sluice_api_request_seconds_count", "method", "route", "status")
        assert posts[("POST", "/api/v1/jobs", "201")] == 5
        # Nothing a worker owns.
        assert (
            not {
                "sluice_worker_jobs_running",
                "sluice_jobs_completed_total",
                "sluice_job_wait_seconds_count",
            }
            & samples.keys()
        )

    eventually(api_matches)
    api.close()


def bearer_admin() -> dict[str, str]:
    from sluice.auth.principal import Role

    return bearer(Role.admin)
