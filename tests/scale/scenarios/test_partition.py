"""Many hosts, simulated for real: two workers and the API each in a network
namespace of its own, joined to PostgreSQL by veth links; a link is cut (the
interface goes down: no reset, no goodbye) and healed.

- A worker cut off mid-job: its jobs are rescued within twice the lease and run
  elsewhere; healed, its late completions change nothing, and it works again.
- The API cut off from the database: clients keep submitting with idempotency
  keys; nothing acknowledged is lost, nothing is doubled, and the API comes back
  by itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from sluice.core.embedded import free_port
from tests.scale.scenarios.conftest import FIGURES
from tests.scale.scenarios.servers import (
    Namespaces,
    Postgres,
    Processes,
    migrate,
    start_sluice,
    url,
    wait_until,
)
from tests.scale.scenarios.traffic import ApiSubmitter, Client, admin_token, starts

SECRET = "scale-tests-secret-long-enough-for-hs256-and-more"
LEASE = 3.0
WORKER = {
    "lease_ttl": LEASE,
    "heartbeat_interval": 1,
    "rescue_interval": 0.3,
    "leader_ttl": 2,
    "poll_interval": 1,
    "concurrency": 2,
    "queues": "part",
}
JOB_SECONDS = 5.0  # long enough to be cut off in the middle
CUT = 8.0  # how long a link stays down


def rows(dsn: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def net(procs: Processes) -> Iterator[dict[str, Any]]:
    spaces = Namespaces(procs)
    try:
        hosts = {
            "w1": spaces.host("w1"),
            "w2": spaces.host("w2"),
            "api": spaces.host("api", links=2),  # [to the database, to its clients]
        }
        db_addrs = [hosts["w1"].links[0].root_addr, hosts["w2"].links[0].root_addr]
        db_addrs.append(hosts["api"].links[0].root_addr)
        pg = Postgres(
            procs, "pg", listen=["127.0.0.1", *db_addrs], hba_networks=["198.18.0.0/15"]
        ).start()
        migrate(pg.url())
        yield {"hosts": hosts, "pg": pg}
    finally:
        procs.stop_all()
        spaces.delete_all()


@pytest.fixture(scope="module")
def worker_cut(net: dict[str, Any], procs: Processes) -> dict[str, Any]:
    pg, hosts = net["pg"], net["hosts"]
    exec_log = procs.run_dir / "executions.log"
    for name in ("w1", "w2"):
        link = hosts[name].links[0]
        start_sluice(
            procs,
            f"worker-{name}",
            ["worker"],
            netns=hosts[name].ns,
            database_url=url(link.root_addr, pg.port),
            worker_id=name,
            scale_exec_log=exec_log,
            **WORKER,
        )
    local = pg.url()
    wait_until(
        lambda: (
            rows(local, "SELECT count(*) AS n FROM sluice.worker_status WHERE alive")[0]["n"] == 2
        ),
        60,
        "both workers",
    )
    ids = [
        r["id"]
        for r in rows(
            local,
            "SELECT sluice.enqueue('tick', jsonb_build_object('seconds', %s::float8), "
            "queue => 'part') AS id FROM generate_series(1, 4)",
            JOB_SECONDS,
        )
    ]
    wait_until(lambda: set(ids) <= starts(exec_log).keys(), 30, "all four jobs to start")
    on_w1 = [
        r["id"]
        for r in rows(
            local,
            "SELECT id FROM sluice.jobs WHERE id = ANY(%s) AND worker_id = 'w1'",
            ids,
        )
    ]
    assert on_w1, "w1 took none of the jobs"
    link = hosts["w1"].links[0]
    link.cut()
    cut_at = time.monotonic()
    rescued_after = None
    try:
        wait_until(
            lambda: (
                rows(
                    local,
                    "SELECT count(*) AS n FROM sluice.job_attempts WHERE job_id = ANY(%s) "
                    "AND attempt = 1 AND outcome = 'rescued'",
                    on_w1,
                )[0]["n"]
                == len(on_w1)
            ),
            4 * LEASE,
            "w1's jobs to be rescued",
            every=0.1,
        )
        rescued_after = time.monotonic() - cut_at
    finally:
        # Its handlers finished while it was cut off: the outcomes wait in its buffer.
        time.sleep(max(0.0, CUT - (time.monotonic() - cut_at)))
        link.heal()
    FIGURES["partition: worker cut off, its jobs rescued after (s), lease"] = (
        None if rescued_after is None else round(rescued_after, 2),
        LEASE,
    )
    wait_until(
        lambda: rows(
            local,
            "SELECT count(*) FILTER (WHERE state::text = 'succeeded') = count(*) AS done "
            "FROM sluice.jobs WHERE id = ANY(%s)",
            ids,
        )[0]["done"],
        60,
        "every job to succeed",
    )
    # Healed, w1 heartbeats again and takes work: a job only it can run.
    wait_until(
        lambda: rows(local, "SELECT alive FROM sluice.worker_status WHERE worker_id = 'w1'")[0][
            "alive"
        ],
        30,
        "w1 to heartbeat again",
    )
    return {
        "ids": ids,
        "on_w1": on_w1,
        "rescued_after": rescued_after,
        "jobs": {
            r["id"]: r
            for r in rows(
                local,
                "SELECT id, state::text, attempt, result, worker_id FROM sluice.jobs "
                "WHERE id = ANY(%s)",
                ids,
            )
        },
        "attempts": rows(
            local,
            "SELECT job_id, attempt, outcome, worker_id FROM sluice.job_attempts "
            "WHERE job_id = ANY(%s) ORDER BY job_id, attempt",
            ids,
        ),
        "w1_alive": procs.procs["worker-w1"].poll() is None,
        "w1_log": procs.log("worker-w1"),
    }


def test_a_cut_off_workers_jobs_are_rescued_within_twice_the_lease(worker_cut):
    assert worker_cut["rescued_after"] is not None
    assert worker_cut["rescued_after"] < 2 * LEASE + 1  # + one rescue pass and a query


def test_late_completions_of_the_healed_worker_change_nothing(worker_cut):
    for job_id in worker_cut["on_w1"]:
        job = worker_cut["jobs"][job_id]
        assert job["state"] == "succeeded"
        assert job["attempt"] == 2
        assert job["result"]["worker"] == "w2"  # the rescued attempt's result stands
        first = [a for a in worker_cut["attempts"] if a["job_id"] == job_id and a["attempt"] == 1]
        assert [(a["outcome"], a["worker_id"]) for a in first] == [("rescued", "w1")]


def test_the_healed_worker_is_still_running(worker_cut):
    assert worker_cut["w1_alive"]


# --- the API cut off from the database --------------------------------------------


class TimedSubmitter(ApiSubmitter):
    """Records how each failed request failed, and how long it took."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[tuple[float, str, float]] = []
        self.lock = threading.Lock()

    def __call__(self, key: str) -> int:
        started = time.monotonic()
        try:
            return super().__call__(key)
        except Exception as exc:
            with self.lock:
                self.failures.append((started, str(exc)[:80], time.monotonic() - started))
            raise


@pytest.fixture(scope="module")
def api_cut(net: dict[str, Any], procs: Processes, worker_cut) -> dict[str, Any]:
    pg, host = net["pg"], net["hosts"]["api"]
    to_db, to_clients = host.links
    port = free_port()
    start_sluice(
        procs,
        "api",
        ["api", "--host", to_clients.ns_addr, "--port", str(port)],
        netns=host.ns,
        database_url=url(to_db.root_addr, pg.port),
        jwt_secret=SECRET,
    )
    base = f"http://{to_clients.ns_addr}:{port}"
    wait_until(lambda: httpx.get(f"{base}/ready", timeout=2).status_code == 200, 60, "the API")
    submit = TimedSubmitter(base, admin_token(SECRET), task="tick", queue="api-cut")
    client = Client("api-cut", submit, every=0.1, give_up=90)
    client.start()
    time.sleep(2)
    to_db.cut()
    cut_at = time.monotonic()
    time.sleep(CUT)
    to_db.heal()
    healed_at = time.monotonic()
    wait_until(
        lambda: any(t > healed_at for t in client.acks.times), 60, "an acknowledgement again"
    )
    time.sleep(2)
    acks = client.stop()
    first_ack_after = min(t for t in acks.times if t > healed_at) - healed_at
    during = [f for f in submit.failures if cut_at <= f[0] <= healed_at]
    FIGURES["partition: API cut off, requests failed during the cut / slowest failure (s)"] = (
        len(during),
        round(max((f[2] for f in during), default=0.0), 1),
    )
    FIGURES["partition: API cut off, first acknowledgement after healing (s)"] = round(
        first_ack_after, 2
    )
    return {"acks": acks, "during": during, "local": pg.url()}


def test_nothing_acknowledged_is_lost_or_doubled_when_the_api_is_cut_off(api_cut):
    acks = api_cut["acks"]
    assert acks.unacknowledged == []
    found = rows(
        api_cut["local"],
        "SELECT idempotency_key, id FROM sluice.jobs WHERE queue = 'api-cut'",
    )
    assert {r["idempotency_key"]: r["id"] for r in found} == acks.ids


def test_clients_get_a_prompt_clear_error_while_the_api_is_cut_off(api_cut):
    during = api_cut["during"]
    assert during, "no request failed while the API was cut off"
    unclear = [f for f in during if not f[1].startswith("HTTP 503") or f[2] > 5]
    assert unclear == []
