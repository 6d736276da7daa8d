"""PgBouncer in transaction mode (Debian's 1.18: no prepared-statement tracking)
in front of one PostgreSQL: migrations, the API and a worker through it, LISTEN
straight to PostgreSQL (SLUICE_LISTEN_URL), prepared statements off by themselves,
and the self-test that notices a pooler swallowing notifications."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import httpx
import psycopg
import pytest

from sluice.core.db import prepared_statements_problem
from sluice.core.embedded import free_port
from tests.scale.scenarios.conftest import FIGURES
from tests.scale.scenarios.servers import (
    PgBouncer,
    Postgres,
    Processes,
    migrate,
    start_sluice,
    wait_until,
)
from tests.scale.scenarios.traffic import admin_token

# A PgBouncer >= 1.21 to test as well (Debian 12 ships 1.18; docs/scaling.md says
# how to build 1.24 from Debian's source package).
NEWER = os.environ.get("SLUICE_SCALE_PGBOUNCER")

SECRET = "scale-tests-secret-long-enough-for-hs256-and-more"


@pytest.fixture(scope="module")
def servers(procs: Processes) -> tuple[Postgres, PgBouncer]:
    pg = Postgres(procs, "pg").start()
    bouncer = PgBouncer(procs, pg.port).start()
    FIGURES["pgbouncer version"] = bouncer.version()
    # `sluice migrate` through the pooler, in transaction mode.
    migrate(bouncer.url())
    return pg, bouncer


def one(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        row = conn.execute(query, params or None).fetchone()
        return None if row is None else row[0]


def test_migrations_ran_through_pgbouncer(servers):
    pg, _ = servers
    assert one(pg.url(), "SELECT version_num FROM sluice.alembic_version") is not None


def test_the_probe_tells_pgbouncer_from_a_direct_connection(servers):
    pg, bouncer = servers
    assert asyncio.run(prepared_statements_problem(pg.url())) is None
    problem = asyncio.run(prepared_statements_problem(bouncer.url()))
    assert problem is not None and "pooler" in problem


@pytest.mark.parametrize("prepare", [None, "1"], ids=["default", "SLUICE_DB_PREPARE=1"])
def test_a_worker_through_pgbouncer_turns_prepared_statements_off_and_drains(
    servers, procs, prepare
):
    pg, bouncer = servers
    queue = f"drain_{prepare or 'default'}"
    name = f"worker-{queue}"
    proc = start_sluice(
        procs,
        name,
        ["worker"],
        database_url=bouncer.url(),
        listen_url=pg.url(),
        db_prepare=prepare,
        queues=queue,
        concurrency=8,
        poll_interval=1,
    )
    with psycopg.connect(bouncer.url(), autocommit=True, prepare_threshold=None) as conn:
        for _ in range(10):
            conn.execute(
                "INSERT INTO sluice.jobs (task, queue) "
                "SELECT 'tick', %s FROM generate_series(1, 50)",
                (queue,),
            )
    wait_until(
        lambda: one(
            pg.url(),
            "SELECT count(*) FILTER (WHERE state::text = 'succeeded') = count(*) "
            "FROM sluice.jobs WHERE queue = %s",
            queue,
        ),
        90,
        "500 jobs to succeed",
    )
    assert proc.poll() is None, procs.log(name)[-2000:]
    assert "prepared statements are off" in procs.log(name)
    assert (
        one(pg.url(), "SELECT count(*) FROM sluice.jobs WHERE queue = %s AND attempt > 1", queue)
        == 0
    )
    procs.stop(name)


def _ready(base: str) -> dict[str, Any] | None:
    body = httpx.get(f"{base}/ready", timeout=5).json()
    return body if body.get("notifications") not in (None, "unchecked", "checking") else None


def test_the_self_test_reports_notifications_swallowed_by_the_pooler(servers, procs):
    pg, bouncer = servers
    swallowed, direct = free_port(), free_port()
    start_sluice(
        procs,
        "api-swallowed",
        ["api", "--port", str(swallowed)],
        database_url=bouncer.url(),
        jwt_secret=SECRET,
    )
    start_sluice(
        procs,
        "api-direct",
        ["api", "--port", str(direct)],
        database_url=bouncer.url(),
        listen_url=pg.url(),
        jwt_secret=SECRET,
    )
    start_sluice(
        procs,
        "worker-swallowed",
        ["worker"],
        database_url=bouncer.url(),
        queues="swallowed",
        poll_interval=30,
    )
    bad = wait_until(lambda: _ready(f"http://127.0.0.1:{swallowed}"), 60, "the API's self-test")
    good = wait_until(lambda: _ready(f"http://127.0.0.1:{direct}"), 60, "the API's self-test")
    assert bad["status"] == "ready" and bad["notifications"] == "not delivered"
    assert "SLUICE_LISTEN_URL" in bad["warning"]
    assert good["notifications"] == "ok" and good["warning"] is None
    wait_until(
        lambda: "did not reach the LISTEN connection" in procs.log("worker-swallowed"),
        30,
        "the worker's warning",
    )
    for name in ("api-swallowed", "api-direct", "worker-swallowed"):
        procs.stop(name)


def test_wake_up_through_pgbouncer_takes_milliseconds(servers, procs):
    """Jobs submitted through the pooler (REST and SQL) start on an idle worker whose
    queries go through the pooler and whose LISTEN goes straight to PostgreSQL; the
    poll is 30 s, so only a notification can explain a fast start."""
    pg, bouncer = servers
    api_port = free_port()
    start_sluice(
        procs,
        "api-wake",
        ["api", "--port", str(api_port)],
        database_url=bouncer.url(),
        listen_url=pg.url(),
        jwt_secret=SECRET,
    )
    start_sluice(
        procs,
        "worker-wake",
        ["worker"],
        database_url=bouncer.url(),
        listen_url=pg.url(),
        queues="wake",
        poll_interval=30,
    )
    base = f"http://127.0.0.1:{api_port}"
    wait_until(lambda: _ready(base), 60, "the API")
    wait_until(lambda: " started: " in procs.log("worker-wake"), 30, "the worker")
    time.sleep(1)  # the worker's first claims and catch-up are over: it is idle
    token = admin_token(SECRET)
    ids: list[int] = []
    with (
        httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http,
        psycopg.connect(bouncer.url(), autocommit=True, prepare_threshold=None) as conn,
        psycopg.connect(pg.url(), autocommit=True) as watch,
    ):
        for n in range(40):
            if n % 2:
                response = http.post("/api/v1/jobs", json={"task": "tick", "queue": "wake"})
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            else:
                row = conn.execute(
                    "INSERT INTO sluice.jobs (task, queue) VALUES ('tick', 'wake') RETURNING id"
                ).fetchone()
                ids.append(row[0])
            # Wait for each to start: the worker is idle again before the next.
            query = "SELECT started_at IS NOT NULL FROM sluice.jobs WHERE id = %s"
            wait_until(
                lambda q=query: watch.execute(q, (ids[-1],)).fetchone()[0],
                10,
                "the job to start",
                every=0.005,
            )
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        delays = [
            row[0]
            for row in conn.execute(
                "SELECT extract(epoch FROM started_at - created_at)::float8 FROM sluice.jobs "
                "WHERE id = ANY(%s)",
                (ids,),
            )
        ]
    median, worst = statistics.median(delays), max(delays)
    FIGURES["pgbouncer: wake-up latency, median / max (ms)"] = (
        round(median * 1000, 1),
        round(worst * 1000, 1),
    )
    assert worst < 2.0  # the poll is 30 s
    for name in ("api-wake", "worker-wake"):
        procs.stop(name)


@pytest.mark.skipif(not NEWER, reason="set SLUICE_SCALE_PGBOUNCER to a PgBouncer >= 1.21 binary")
def test_pgbouncer_that_tracks_prepared_statements_keeps_them_on(servers, procs):
    pg, _ = servers
    newer = PgBouncer(
        procs, pg.port, name="pgbouncer-new", binary=NEWER, max_prepared_statements=200
    ).start()
    FIGURES["pgbouncer (newer) version"] = newer.version()
    assert asyncio.run(prepared_statements_problem(newer.url())) is None
    start_sluice(
        procs,
        "worker-tracked",
        ["worker"],
        database_url=newer.url(),
        listen_url=pg.url(),
        queues="tracked",
        concurrency=8,
        poll_interval=1,
    )
    with psycopg.connect(newer.url(), autocommit=True, prepare_threshold=None) as conn:
        conn.execute(
            "INSERT INTO sluice.jobs (task, queue) SELECT 'tick', 'tracked' "
            "FROM generate_series(1, 300)"
        )
    wait_until(
        lambda: one(
            pg.url(),
            "SELECT count(*) FILTER (WHERE state::text = 'succeeded') = count(*) "
            "FROM sluice.jobs WHERE queue = 'tracked'",
        ),
        90,
        "300 jobs to succeed",
    )
    assert "prepared statements are off" not in procs.log("worker-tracked")
    procs.stop("worker-tracked")
