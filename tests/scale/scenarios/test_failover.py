"""Jobs and DAG runs through a planned switchover and through a killed primary, on
Patroni + etcd + HAProxy with synchronous replication.

One cluster for the module; the scenario runs once (the `outcome` fixture) and
each test checks one property of what happened. Sluice reaches the cluster in
the three ways users do: a multi-host URL with target_session_attrs=read-write
(libpq finds the primary), HAProxy's port that follows the primary, and one
fixed host (which becomes a standby after a switchover). The API reads
lag-tolerant numbers from HAProxy's replica port.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest

from sluice.core.embedded import free_port
from tests.scale.scenarios.conftest import FIGURES
from tests.scale.scenarios.servers import (
    PatroniCluster,
    Processes,
    migrate,
    start_sluice,
    wait_until,
)
from tests.scale.scenarios.traffic import (
    ApiSubmitter,
    Client,
    SqlSubmitter,
    admin_token,
    chain,
    starts,
)

SECRET = "scale-tests-secret-long-enough-for-hs256-and-more"
TTL = 10  # Patroni's leader key TTL: how long a dead primary goes unnoticed
# Short jobs on workers with the default 30 s lease, longer than either outage.
FAST = {"poll_interval": 1, "heartbeat_interval": 1, "rescue_interval": 0.5, "leader_ttl": 5}


def sql(url: str, query: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def cluster(procs: Processes) -> PatroniCluster:
    cluster = PatroniCluster(procs, ttl=TTL).start()
    migrate(cluster.multi_host_url())
    return cluster


@pytest.fixture(scope="module")
def outcome(cluster: PatroniCluster, procs: Processes) -> dict[str, Any]:
    exec_log = procs.run_dir / "executions.log"
    multi, haproxy = cluster.multi_host_url(), cluster.primary_url()
    common = {**FAST, "scale_exec_log": exec_log, "concurrency": 8, "shutdown_grace": 5}
    api_port = free_port()
    start_sluice(
        procs,
        "api",
        ["api", "--port", str(api_port)],
        database_url=haproxy,
        read_database_url=cluster.replica_url(),
        jwt_secret=SECRET,
    )
    first_leader = cluster.leader()
    assert first_leader is not None
    workers = {
        "worker-multi": {"database_url": multi, "queues": "default"},
        "worker-haproxy": {"database_url": haproxy, "queues": "default"},
        "worker-fixed": {"database_url": cluster.node_url(first_leader), "queues": "fixed"},
    }
    for name, settings in workers.items():
        start_sluice(procs, name, ["worker"], **{**common, **settings})
    base = f"http://127.0.0.1:{api_port}"
    wait_until(lambda: httpx.get(f"{base}/ready").status_code == 200, 60, "the API")
    wait_until(
        lambda: sql(multi, "SELECT count(*) FROM sluice.worker_status WHERE alive")[0][0] == 3,
        60,
        "three workers",
    )
    token = admin_token(SECRET)
    result: dict[str, Any] = {"acks": {}, "gaps": {}, "base": base, "token": token}

    def clients(phase: str) -> list[Client]:
        return [
            Client(f"sql-{phase}", SqlSubmitter(multi, seconds=0.05)),
            Client(
                f"api-{phase}",
                ApiSubmitter(base, token, task="tick", payload={"seconds": 0.05}),
            ),
            Client(f"run-{phase}", ApiSubmitter(base, token, run=chain()), every=0.5),
            Client(f"fixed-{phase}", SqlSubmitter(multi, queue="fixed"), every=0.2),
        ]

    for phase in ("planned", "crash"):
        _phase(phase, cluster, clients(phase), result, exec_log, multi)

    default_ids = [
        i
        for name, acks in result["acks"].items()
        if name.startswith(("sql-", "api-"))
        for i in acks.ids.values()
    ]
    run_ids = [i for n, a in result["acks"].items() if n.startswith("run-") for i in a.ids.values()]
    fixed_ids = [
        i for n, a in result["acks"].items() if n.startswith("fixed-") for i in a.ids.values()
    ]
    result.update(default_ids=default_ids, run_ids=run_ids, fixed_ids=fixed_ids)

    def settled() -> bool:
        left = sql(
            multi,
            "SELECT count(*) FROM sluice.jobs WHERE id = ANY(%s) AND state::text NOT IN "
            "('succeeded', 'failed', 'cancelled')",
            default_ids,
        )[0][0]
        runs_left = sql(
            multi,
            "SELECT count(*) FROM sluice.dag_runs WHERE id = ANY(%s) AND finished_at IS NULL",
            run_ids,
        )[0][0]
        return left == 0 and runs_left == 0

    try:
        wait_until(settled, 90, "every acknowledged job and run to finish", every=1)
    except AssertionError as exc:
        result["settle_error"] = str(exc)
    node_rows = sql(multi, "SELECT id, run_id FROM sluice.jobs WHERE run_id = ANY(%s)", run_ids)
    result["phase_jobs"] = {
        phase: {
            i
            for name, acks in result["acks"].items()
            if name.endswith(phase) and name.startswith(("sql-", "api-"))
            for i in acks.ids.values()
        }
        | {job for job, run in node_rows if run in result["acks"][f"run-{phase}"].ids.values()}
        for phase in ("planned", "crash")
    }
    result["jobs"] = {
        row[0]: row[1:]
        for row in sql(
            multi,
            "SELECT id, state::text, attempt, idempotency_key, queue FROM sluice.jobs "
            "WHERE id = ANY(%s)",
            default_ids + fixed_ids + [j for j, _ in node_rows],
        )
    }
    result["attempt_outcomes"] = {}
    for job, outcome in sql(
        multi,
        "SELECT job_id, outcome FROM sluice.job_attempts WHERE job_id = ANY(%s) "
        "ORDER BY job_id, attempt",
        list(result["jobs"]),
    ):
        result["attempt_outcomes"].setdefault(job, []).append(outcome)
    result["runs"] = dict(
        sql(multi, "SELECT id, state::text FROM sluice.dag_runs WHERE id = ANY(%s)", run_ids)
    )
    result["starts"] = starts(exec_log)
    result["alive"] = {name: procs.procs[name].poll() is None for name in (*workers, "api")}
    FIGURES["failover: write gap (s), SQL client / API client"] = {
        kind: result["gaps"][kind] for kind in result["gaps"]
    }
    FIGURES["failover: acknowledged jobs / runs"] = (len(default_ids), len(run_ids))
    return result


def _phase(
    phase: str,
    cluster: PatroniCluster,
    running: list[Client],
    result: dict[str, Any],
    exec_log,
    url: str,
) -> None:
    """Clients submit; the primary goes (planned or killed); they go on until writes
    have resumed for a while; then the cluster is made whole again."""
    for c in running:
        c.start()
    time.sleep(2)
    t0 = time.monotonic()
    if phase == "planned":
        cluster.switchover()
    else:
        dead = cluster.crash_leader()
        wait_until(lambda: cluster.leader() not in (None, dead), 90, "a new leader")
    sql_client, api_client = running[0], running[1]
    # Every client, not the SQL one alone: the API comes back a few seconds later
    # (its pool finds the new primary), and stopping its client while it still
    # retries would leave a submission unanswered.
    wait_until(
        lambda: all(any(t > t0 + 0.5 for t in c.acks.times[-3:]) for c in running),
        60,
        "every client writes again",
    )
    time.sleep(2)
    t1 = time.monotonic()
    for c in running:
        result["acks"][c.name] = c.stop()
    result["gaps"][phase] = round(sql_client.acks.longest_gap(t0, t1), 2)
    result["gaps"][f"{phase} (API)"] = round(api_client.acks.longest_gap(t0, t1), 2)
    if phase == "crash":
        cluster.restart_node(dead)
    wait_until(cluster.sync_standby, 90, "a synchronous standby again")


def _jobs(outcome, ids) -> dict[int, tuple]:
    return {i: outcome["jobs"].get(i) for i in ids}


def test_no_acknowledged_job_is_lost(outcome):
    lost = [i for i in outcome["default_ids"] + outcome["fixed_ids"] if i not in outcome["jobs"]]
    FIGURES["failover: acknowledged jobs lost"] = len(lost)
    assert lost == []
    # Each key maps to the id its client was told, once.
    for acks in outcome["acks"].values():
        for key, job_id in acks.ids.items():
            if job_id in outcome["jobs"] and not str(key).startswith("run-"):
                assert outcome["jobs"][job_id][2] == key


def test_every_client_got_its_acknowledgement(outcome):
    left = {
        name: (a.unacknowledged, a.errors[-3:])
        for name, a in outcome["acks"].items()
        if a.unacknowledged
    }
    assert left == {}


def test_every_acknowledged_job_finished_successfully(outcome):
    jobs = _jobs(outcome, outcome["default_ids"])
    not_done = {i: j for i, j in jobs.items() if j is None or j[0] != "succeeded"}
    assert "settle_error" not in outcome, outcome.get("settle_error")
    assert not_done == {}


def _ran_twice(outcome, phase: str) -> dict[int, int]:
    ids = outcome["phase_jobs"][phase]
    return {i: n for i, n in outcome["starts"].items() if i in ids and n > 1}


def test_no_job_ran_twice_through_a_planned_switchover(outcome):
    twice = _ran_twice(outcome, "planned")
    FIGURES["failover: jobs executed twice, planned switchover"] = len(twice)
    assert twice == {}


def test_no_job_was_retried_because_of_a_failover(outcome):
    """No attempt failed or was rescued. A claim whose answer the failover lost is
    handed back by its worker at once (`released`, not counted against the job),
    which is not a retry."""
    ids = outcome["phase_jobs"]["planned"] | outcome["phase_jobs"]["crash"]
    attempts = {i: outcome["attempt_outcomes"].get(i, []) for i in ids}
    retried = {i: o for i, o in attempts.items() if set(o) - {"succeeded", "released"}}
    FIGURES["failover: jobs with attempt > 1"] = sum(
        1 for i, j in outcome["jobs"].items() if i in ids and j[1] > 1
    )
    FIGURES["failover: claims handed back after their answer was lost"] = sum(
        o.count("released") for o in attempts.values()
    )
    assert retried == {}


def test_no_job_ran_twice_through_a_killed_primary(outcome):
    twice = _ran_twice(outcome, "crash")
    FIGURES["failover: jobs executed twice, killed primary"] = len(twice)
    assert twice == {}


def test_every_dag_run_finished(outcome):
    runs = outcome["runs"]
    assert set(runs) == set(outcome["run_ids"])
    assert {i: s for i, s in runs.items() if s != "succeeded"} == {}


def test_workers_and_api_on_a_url_that_follows_the_primary_survive(outcome):
    alive = outcome["alive"]
    assert alive["api"] and alive["worker-multi"] and alive["worker-haproxy"]


def test_write_gap_stays_within_bounds(outcome):
    gaps = outcome["gaps"]
    assert gaps["planned"] < 10
    assert gaps["crash"] < TTL + 20


def test_a_worker_on_a_fixed_host_survives_a_switchover_and_resumes(outcome):
    assert outcome["alive"]["worker-fixed"]
    jobs = _jobs(outcome, outcome["fixed_ids"])
    assert {i: j for i, j in jobs.items() if j is None or j[0] != "succeeded"} == {}


# --- reads from the replica -------------------------------------------------------


@pytest.fixture
def replay_paused(cluster: PatroniCluster, outcome):
    """The standby receives WAL but does not apply it: it lags, visibly."""
    sql(cluster.replica_url(), "SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        sql(cluster.replica_url(), "SELECT pg_wal_replay_resume()")


def _lagging_queue(cluster: PatroniCluster) -> str:
    """A job in a new queue, on the primary only (received by the standby, not applied)."""
    queue = f"lagging_{time.monotonic_ns()}"
    lsn = sql(
        cluster.primary_url(),
        "SELECT sluice.enqueue('tick', '{}', queue => %s), pg_current_wal_lsn()::text",
        queue,
    )[0][1]
    wait_until(
        lambda: sql(cluster.replica_url(), "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", lsn)[
            0
        ][0],
        30,
        "the standby to receive the insert",
    )
    return queue


def test_metrics_queue_depths_are_read_from_the_replica(cluster, outcome, replay_paused):
    queue = _lagging_queue(cluster)
    metrics = httpx.get(f"{outcome['base']}/metrics").text
    assert f'queue="{queue}"' not in metrics  # the replica has not applied it
    sql(cluster.replica_url(), "SELECT pg_wal_replay_resume()")
    wait_until(
        lambda: f'queue="{queue}"' in httpx.get(f"{outcome['base']}/metrics").text,
        30,
        "the replica to catch up",
    )


def test_dashboard_lists_are_read_from_the_replica(cluster, outcome, replay_paused):
    queue = _lagging_queue(cluster)

    def listed(path: str) -> set[str]:
        answer = httpx.get(
            f"{outcome['base']}/api/v1/{path}",
            headers={"Authorization": f"Bearer {outcome['token']}"},
        )
        assert answer.status_code == 200, answer.text
        return {item.get("name") or item.get("queue") for item in answer.json()["items"]}

    assert queue not in listed("queues")  # the replica has not applied it
    assert queue not in listed("jobs?limit=1000")
    sql(cluster.replica_url(), "SELECT pg_wal_replay_resume()")
    wait_until(lambda: queue in listed("queues"), 30, "the replica to catch up")
