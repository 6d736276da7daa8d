"""A database outage longer than the lease, on one plain PostgreSQL: what happens
to jobs that were running on live workers while the database was away.

The timeline is made deterministic: the maintenance leader is a worker process
started the moment the database is back (fresh connections, no retry backoff),
and the worker whose leases ran out during the outage is held (SIGSTOP) from
just before the database returns until the new leader has had its first rescue
pass, which is less than a lease: the leader is back first, as it would be if
the worker were slower to reconnect. It must not rescue that worker's jobs (it
waits a whole lease of contact with the database first). A worker with a lease
longer than the outage shows the outcomes buffered during the outage being
written after it.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest

from tests.scale.scenarios.conftest import FIGURES
from tests.scale.scenarios.servers import Postgres, Processes, migrate, start_sluice, wait_until
from tests.scale.scenarios.traffic import starts

OUTAGE = 11.0  # seconds without a database
HELD = {"lease_ttl": 8, "heartbeat_interval": 2}  # a lease shorter than the outage
FREE = {"lease_ttl": 30, "heartbeat_interval": 2}  # a lease longer than the outage
LONG, SHORT = 18, 3  # job lengths: through the outage / ending inside it


def sql(url: str, query: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def enqueue(url: str, queue: str, seconds: float, n: int) -> list[int]:
    return [
        row[0]
        for row in sql(
            url,
            "SELECT sluice.enqueue('tick', jsonb_build_object('seconds', %s::float8), "
            "queue => %s) FROM generate_series(1, %s)",
            seconds,
            queue,
            n,
        )
    ]


@pytest.fixture(scope="module")
def outcome(procs: Processes) -> dict[str, Any]:
    pg = Postgres(procs, "pg").start()
    url = pg.url()
    migrate(url)
    exec_log = procs.run_dir / "executions.log"
    common = {"scale_exec_log": exec_log, "poll_interval": 1, "concurrency": 8}
    start_sluice(
        procs,
        "worker-held",
        ["worker"],
        database_url=url,
        queues="held",
        maintenance=0,
        **common,
        **HELD,
    )
    start_sluice(
        procs,
        "worker-free",
        ["worker"],
        database_url=url,
        queues="free",
        maintenance=0,
        **common,
        **FREE,
    )
    wait_until(lambda: sql(url, "SELECT count(*) FROM sluice.workers")[0][0] == 2, 60, "workers")
    ids = {
        "long": enqueue(url, "held", LONG, 3),
        "short held": enqueue(url, "held", SHORT, 3),
        "short free": enqueue(url, "free", SHORT, 4),
    }
    every = [i for group in ids.values() for i in group]
    wait_until(lambda: set(every) <= starts(exec_log).keys(), 30, "every job to start")

    pg.stop_server()
    outage_started = time.monotonic()
    time.sleep(OUTAGE)
    procs.kill("worker-held", signal.SIGSTOP)
    pg.start_server()
    back = time.monotonic()
    back_at = sql(url, "SELECT now()")[0][0]
    start_sluice(
        procs,
        "leader",
        ["worker"],
        database_url=url,
        queues="nothing",
        rescue_interval=0.2,
        leader_ttl=3,
        poll_interval=1,
    )
    # A worker left alone through the outage claims again by itself.
    later = enqueue(url, "free", 0, 2)
    try:
        wait_until(lambda: "elected maintenance leader" in procs.log("leader"), 20, "a leader")
        time.sleep(1.0)  # its first rescue passes
    finally:
        held_for = time.monotonic() - back
        procs.kill("worker-held", signal.SIGCONT)
    wait_until(lambda: set(later) <= starts(exec_log).keys(), 30, "the jobs submitted after")
    claimed_after = sql(
        url,
        "SELECT extract(epoch FROM max(started_at) - %s::timestamptz) FROM sluice.jobs "
        "WHERE id = ANY(%s)",
        back_at,
        later,
    )[0][0]
    FIGURES["outage: first claims after the database is back (s)"] = round(float(claimed_after), 1)
    FIGURES["outage: seconds without a database / worker held after it"] = (
        round(back - outage_started, 1),
        round(held_for, 1),
    )

    def settled() -> bool:
        left = sql(
            url,
            "SELECT count(*) FROM sluice.jobs WHERE id = ANY(%s) AND state::text IN "
            "('ready', 'running', 'scheduled')",
            every,
        )[0][0]
        return left == 0

    settle_error = None
    try:
        wait_until(settled, 60, "every job to finish", every=0.5)
    except AssertionError as exc:
        settle_error = str(exc)
    jobs = {
        row[0]: row[1:]
        for row in sql(
            url, "SELECT id, state::text, attempt FROM sluice.jobs WHERE id = ANY(%s)", every
        )
    }
    return {
        "ids": ids,
        "jobs": jobs,
        "starts": starts(exec_log),
        "held_for": held_for,
        "settle_error": settle_error,
        "alive": {n: procs.procs[n].poll() is None for n in ("worker-held", "worker-free")},
        "claimed_after": float(claimed_after),
        "url": url,
    }


def _not_once(outcome, group: str) -> dict[int, Any]:
    """Jobs of `group` that did not succeed on their one and only execution."""
    return {
        i: (outcome["jobs"].get(i), outcome["starts"].get(i, 0))
        for i in outcome["ids"][group]
        if outcome["jobs"].get(i) != ("succeeded", 1) or outcome["starts"].get(i, 0) != 1
    }


def test_the_hold_was_shorter_than_the_lease(outcome):
    assert outcome["held_for"] < HELD["lease_ttl"]


def test_workers_ride_out_the_outage(outcome):
    assert outcome["alive"] == {"worker-held": True, "worker-free": True}


def test_a_worker_claims_again_soon_after_the_outage(outcome):
    """Its pool starts a fresh connection attempt whenever the claimer has waited
    POOL_TIMEOUT (worker/runner.py), instead of waiting out psycopg_pool's doubling
    reconnect delay (which took 4-5 s after this outage, 20 s with a capped one)."""
    assert outcome["claimed_after"] < 10


def test_outcomes_buffered_during_the_outage_are_written_after_it(outcome):
    """Jobs that ended while the database was away, on a worker whose lease
    outlived the outage: their success is recorded once it is back."""
    assert _not_once(outcome, "short free") == {}


def test_outcomes_of_a_live_worker_are_not_rescued_away_after_an_outage(outcome):
    """Jobs that ended during an outage longer than their lease, on a worker that
    is alive: the leader, back first, waits a lease before it rescues anything;
    the worker renews and writes its buffered outcomes well before."""
    assert _not_once(outcome, "short held") == {}


def test_jobs_running_through_an_outage_longer_than_the_lease_run_once(outcome):
    """Jobs still running through the outage keep their leases: their worker renews
    them once the database is back, before the leader may rescue them."""
    twice = {i: n for i, n in outcome["starts"].items() if i in outcome["ids"]["long"] and n > 1}
    FIGURES["outage: long jobs run twice after an outage longer than the lease"] = len(twice)
    assert _not_once(outcome, "long") == {}
