"""The job state machine against real PostgreSQL, driven by Hypothesis.

Random sequences of submit (alone, with parents, or as a DAG run, plain or
with trigger rules, conditions, maps and signal waits), edge, claim, complete
(with results that conditions read, and late completions), fail, rescue,
release, cancel, retry, promote, signal, wait timeouts and reruns; after every
step the invariants of tests/engine/invariants.py must hold. Each example
starts from empty tables; the search is derandomized, so a run is repeatable.
"""

from __future__ import annotations

import itertools
import json
import os

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from psycopg.rows import dict_row

from sluice.core.db import connection_kwargs
from tests.engine.invariants import INVARIANTS

# SLUICE_STATE_MACHINE_EXAMPLES=1000 (and _RANDOM=1 for a fresh search) hunts deeper.
SETTINGS = settings(
    max_examples=int(os.environ.get("SLUICE_STATE_MACHINE_EXAMPLES", 60)),
    stateful_step_count=30,
    deadline=None,
    derandomize=not os.environ.get("SLUICE_STATE_MACHINE_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
WORKERS = ("w1", "w2")
# Refusals the engine may rightly answer to a random edge.
EDGE_REFUSALS = {"job_edges_acyclic", "job_edges_child_pending", "job_edges_parent_alive"}
TABLES = (
    "sluice.jobs, sluice.job_edges, sluice.job_attempt_log, sluice.dead_letters, sluice.dag_runs"
)
RULES = ("all_success", "all_done", "one_success", "one_failed", "none_failed")
# A DAG run with data flow: per node, its parents (earlier nodes), trigger rule and kind.
FLOW_SHAPE = st.lists(
    st.tuples(
        st.lists(st.integers(0, 4), max_size=2),
        st.sampled_from(RULES),
        st.sampled_from(("plain", "when", "map", "signal")),
    ),
    min_size=2,
    max_size=5,
)


class JobMachine(RuleBasedStateMachine):
    """One database, many jobs; each job has its own queue so a claim can target it."""

    url: str = ""
    jobs = Bundle("jobs")

    def __init__(self):
        super().__init__()
        self.conn = psycopg.connect(self.url, **connection_kwargs())
        self.conn.execute(f"TRUNCATE {TABLES} CASCADE")
        self.lanes = itertools.count()
        self.known: set[int] = set()

    # -- helpers ---------------------------------------------------------------------

    def one(self, sql, *params):
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params or None)
            return cur.fetchone()

    def all(self, sql, *params):
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params or None)
            return cur.fetchall()

    def job(self, job_id):
        """The job's row; a map element a rerun deleted reads as `gone`."""
        return self.one("SELECT * FROM sluice.jobs WHERE id = %s", job_id) or {
            "state": "gone",
            "queue": "gone",
            "worker_id": None,
            "attempt": 0,
            "run_id": None,
            "map_index": None,
            "flow": None,
            "node": None,
            "pending_parents": 0,
        }

    def new_job(self, max_attempts, delayed):
        return self.one(
            "WITH i AS (SELECT nextval(pg_get_serial_sequence('sluice.jobs', 'id')) AS id)"
            " INSERT INTO sluice.jobs (id, task, queue, max_attempts, backoff_base, run_at)"
            " SELECT i.id, 'noop', 'q' || i.id, %s, '0',"
            "        CASE WHEN %s THEN now() + interval '1 hour' ELSE now() END FROM i"
            " RETURNING id",
            max_attempts,
            delayed,
        )["id"]

    # -- submitting ------------------------------------------------------------------

    @initialize(target=jobs, n=st.integers(2, 4))
    def first_jobs(self, n):
        return multiple(*(self.new_job(2, False) for _ in range(n)))

    @rule(
        target=jobs,
        max_attempts=st.integers(1, 3),
        delayed=st.booleans(),
        parents=st.lists(jobs, max_size=3, unique=True),
    )
    def submit(self, max_attempts, delayed, parents):
        """A job, with the given jobs as parents, in one transaction (like the API)."""
        try:
            with self.conn.transaction():
                job_id = self.new_job(max_attempts, delayed)
                if parents:
                    self.conn.execute(
                        "INSERT INTO sluice.job_edges SELECT unnest(%s::bigint[]), %s",
                        (parents, job_id),
                    )
        except psycopg.errors.CheckViolation as error:
            assert error.diag.constraint_name == "job_edges_parent_alive", error
            job_id = self.new_job(max_attempts, delayed)
        except psycopg.errors.ForeignKeyViolation:  # a parent a rerun deleted
            job_id = self.new_job(max_attempts, delayed)
        return job_id

    @rule(
        target=jobs, shape=st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=1, max_size=4)
    )
    def start_run(self, shape):
        """A DAG run: node i depends on earlier nodes named in shape[i]."""
        nodes = []
        for i, deps in enumerate(shape):
            nodes.append(
                {
                    "id": f"n{i}",
                    "task": "noop",
                    "queue": f"run-{next(self.lanes)}",
                    "max_attempts": 2,
                    "backoff_base": 0,
                    "depends_on": sorted({f"n{d}" for d in deps if d < i}),
                }
            )
        run_id = self.one(
            "SELECT sluice.dag_run_create('default', %s::jsonb) AS id", json.dumps({"nodes": nodes})
        )["id"]
        ids = [r["id"] for r in self.all("SELECT id FROM sluice.jobs WHERE run_id = %s", run_id)]
        return multiple(*ids)

    @initialize(target=jobs, shape=FLOW_SHAPE)
    def first_flow_run(self, shape):
        return self.start_flow_run(shape)

    @rule(target=jobs, shape=FLOW_SHAPE)
    def another_flow_run(self, shape):
        return self.start_flow_run(shape)

    def start_flow_run(self, shape):
        """A DAG run with data flow: node i has a trigger rule, and is plain, runs
        only when its first parent's result says go, maps over a short list, or
        waits for a signal."""
        nodes = []
        for i, (deps, trigger, kind) in enumerate(shape):
            parents = sorted({f"n{d}" for d in deps if d < i})
            spec = {
                "id": f"n{i}",
                "depends_on": parents,
                "trigger": trigger,
                "max_attempts": 2,
                "backoff_base": 0,
                "queue": f"run-{next(self.lanes)}",
            }
            if kind == "signal":
                spec["wait"] = {
                    "signal": True,
                    "timeout": 3600,
                    "on_timeout": ("skip", "fail")[i % 2],
                }
            else:
                spec["task"] = "noop"
            if kind == "when" and parents:
                spec["when"] = f"$.nodes.{parents[0]}.result.go == true"
            if kind == "map":
                spec["map"] = list(range(i % 3))
            nodes.append(spec)
        run_id = self.one(
            "SELECT sluice.dag_run_create('default', %s::jsonb) AS id", json.dumps({"nodes": nodes})
        )["id"]
        return multiple(*self.new_ids(run_id))

    def new_ids(self, run_id=None):
        """Jobs not yet in the bundle (map elements appear as their node is
        released), each given a queue of its own so a claim can target it."""
        found = [
            r["id"]
            for r in self.all(
                "SELECT id FROM sluice.jobs WHERE (%s::bigint IS NULL OR run_id = %s)"
                " AND id <> ALL(%s) AND task <> ALL('{webhook,email}') ORDER BY id",
                run_id,
                run_id,
                list(self.known),
            )
        ]
        self.conn.execute(
            "UPDATE sluice.jobs SET queue = 'q' || id WHERE id = ANY(%s) AND group_id IS NOT NULL",
            (found,),
        )
        self.known.update(found)
        return found

    @rule(target=jobs)
    def find_elements(self):
        return multiple(*self.new_ids())

    @rule(parent=jobs, child=jobs)
    def edge(self, parent, child):
        try:
            self.conn.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (parent, child))
        except psycopg.errors.CheckViolation as error:
            assert error.diag.constraint_name in EDGE_REFUSALS | {"job_edges_no_self_loop"}, error
        except (psycopg.errors.UniqueViolation, psycopg.errors.ForeignKeyViolation):
            pass

    # -- the worker's side -----------------------------------------------------------

    @rule(job=jobs, worker=st.sampled_from(WORKERS))
    def claim(self, job, worker):
        before = self.job(job)
        if (before["flow"] or {}).get("map") is not None:
            return  # its elements not yet found share its queue
        claimed = self.all(
            "SELECT id FROM sluice.job_claim(%s, %s, 1, '1 hour')", worker, [before["queue"]]
        )
        assert [r["id"] for r in claimed] == ([job] if before["state"] == "ready" else [])

    @rule(job=jobs, late=st.booleans(), go=st.sampled_from((True, False, None)))
    def complete(self, job, late, go):
        before = self.job(job)
        attempt = before["attempt"] - 1 if late else before["attempt"]
        done = self.all(
            "SELECT id FROM sluice.job_complete_many(%s, %s, %s, %s::jsonb[]) AS id",
            before["worker_id"],
            [job],
            [attempt],
            [None if go is None else json.dumps({"go": go})],
        )
        expected = before["state"] == "running" and not late
        assert bool(done) == expected
        assert (self.job(job)["state"] == "succeeded") == (
            expected or before["state"] == "succeeded"
        )

    @rule(job=jobs, go=st.booleans())
    def run_through(self, job, go):
        """A ready job claimed and completed at once, with a result conditions read."""
        before = self.job(job)
        if before["state"] != "ready":
            return
        claimed = self.all(
            "SELECT id, attempt FROM sluice.job_claim('w1', %s, 1, '1 hour')", [before["queue"]]
        )
        assert [r["id"] for r in claimed] == [job]
        self.all(
            "SELECT * FROM sluice.job_complete_many('w1', %s, %s, %s::jsonb[])",
            [job],
            [claimed[0]["attempt"]],
            [json.dumps({"go": go})],
        )
        assert self.job(job)["state"] == "succeeded"

    @rule(job=jobs, retryable=st.booleans())
    def fail(self, job, retryable):
        before = self.job(job)
        failed = self.all(
            "SELECT * FROM sluice.job_fail_many(%s, %s, %s, '{boom}', %s)",
            before["worker_id"],
            [job],
            [before["attempt"]],
            [retryable],
        )
        assert bool(failed) == (before["state"] == "running")

    @rule(job=jobs)
    def rescue(self, job):
        self.conn.execute(
            "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second'"
            " WHERE id = %s AND state = 'running'",
            (job,),
        )
        self.all("SELECT * FROM sluice.job_rescue_expired(100)")
        assert not self.all("SELECT 1 FROM sluice.stuck_jobs")

    @rule(job=jobs)
    def release(self, job):
        before = self.job(job)
        self.all(
            "SELECT * FROM sluice.job_release_many(%s, %s, %s)",
            before["worker_id"],
            [job],
            [before["attempt"]],
        )

    # -- the operator's side ---------------------------------------------------------

    @rule(job=jobs)
    def cancel(self, job):
        before = self.job(job)
        cancelled = self.all("SELECT * FROM sluice.job_cancel(%s)", [job])
        assert bool(cancelled) == (
            before["state"] not in ("succeeded", "failed", "cancelled", "skipped", "gone")
        )

    @rule(job=jobs, dead=st.booleans())
    def retry(self, job, dead):
        if dead:
            self.all("SELECT sluice.retry_dead(%s)", job)
        else:
            self.all("SELECT * FROM sluice.job_retry(%s)", [job])

    @rule(job=jobs)
    def signal(self, job):
        before = self.job(job)
        if before["run_id"] is None or before["map_index"] is not None:
            return
        waiting = (
            before["state"] == "waiting"
            and (before["flow"] or {}).get("wait", {}).get("signal") is True
        )
        got = self.one(
            "SELECT sluice.signal(%s, %s, '{\"go\": true}') AS ok", before["run_id"], before["node"]
        )["ok"]
        assert got == waiting, (before["state"], got)
        assert (self.job(job)["state"] == "succeeded") == (
            waiting or before["state"] == "succeeded"
        )

    @rule(job=jobs)
    def time_out(self, job):
        """A wait past its deadline, swept."""
        self.conn.execute(
            "UPDATE sluice.jobs SET run_at = now() - interval '1 second'"
            " WHERE id = %s AND state = 'waiting' AND pending_parents = 0",
            (job,),
        )
        self.all("SELECT sluice.job_wake_waiting(100)")
        assert self.job(job)["state"] != "waiting" or self.job(job)["pending_parents"] > 0

    @rule(job=jobs)
    def rerun(self, job):
        before = self.job(job)
        if before["run_id"] is None or before["map_index"] is not None:
            return
        try:
            with self.conn.transaction():
                self.all("SELECT sluice.dag_run_rerun(%s, %s)", before["run_id"], before["node"])
        except psycopg.errors.ObjectInUse:
            pass

    @rule()
    def promote(self):
        self.conn.execute("UPDATE sluice.jobs SET run_at = now() WHERE state = 'scheduled'")
        self.all("SELECT sluice.job_promote_scheduled(1000)")
        assert not self.all("SELECT 1 FROM sluice.jobs WHERE state = 'scheduled'")

    # -- what must always hold -------------------------------------------------------

    def teardown(self):
        self.conn.close()

    @invariant()
    def engine_invariants(self):
        found = {name: bad for name, sql in INVARIANTS.items() if (bad := self.all(sql))}
        assert not found, found


@pytest.mark.timeout(900)  # about 45 s on a loaded machine; the default 120 s is tight
def test_the_job_state_machine_keeps_its_invariants(database_url):
    class Machine(JobMachine):
        url = database_url

    run_state_machine_as_test(Machine, settings=SETTINGS)
