"""The job state machine against real PostgreSQL, driven by Hypothesis.

Random sequences of submit (alone, with parents, or as a DAG run), edge,
claim, complete (and late completions), fail, rescue, release, cancel, retry
and promote; after every step the invariants of tests/engine/invariants.py
must hold. Each example starts from empty tables; the search is derandomized,
so a run is repeatable.
"""

from __future__ import annotations

import itertools
import json

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

SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
WORKERS = ("w1", "w2")
# Refusals the engine may rightly answer to a random edge.
EDGE_REFUSALS = {"job_edges_acyclic", "job_edges_child_pending", "job_edges_parent_alive"}
TABLES = (
    "sluice.jobs, sluice.job_edges, sluice.job_attempt_log, sluice.dead_letters, sluice.dag_runs"
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

    def teardown(self):
        self.conn.close()

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
        return self.one("SELECT * FROM sluice.jobs WHERE id = %s", job_id)

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

    @rule(parent=jobs, child=jobs)
    def edge(self, parent, child):
        try:
            self.conn.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (parent, child))
        except psycopg.errors.CheckViolation as error:
            assert error.diag.constraint_name in EDGE_REFUSALS | {"job_edges_no_self_loop"}, error
        except psycopg.errors.UniqueViolation:
            pass

    # -- the worker's side -----------------------------------------------------------

    @rule(job=jobs, worker=st.sampled_from(WORKERS))
    def claim(self, job, worker):
        before = self.job(job)
        claimed = self.all(
            "SELECT id FROM sluice.job_claim(%s, %s, 1, '1 hour')", worker, [before["queue"]]
        )
        assert [r["id"] for r in claimed] == ([job] if before["state"] == "ready" else [])

    @rule(job=jobs, late=st.booleans())
    def complete(self, job, late):
        before = self.job(job)
        attempt = before["attempt"] - 1 if late else before["attempt"]
        done = self.all(
            "SELECT id FROM sluice.job_complete_many(%s, %s, %s, '{null}'::jsonb[]) AS id",
            before["worker_id"],
            [job],
            [attempt],
        )
        expected = before["state"] == "running" and not late
        assert bool(done) == expected
        assert (self.job(job)["state"] == "succeeded") == (
            expected or before["state"] == "succeeded"
        )

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
        assert bool(cancelled) == (before["state"] not in ("succeeded", "failed", "cancelled"))

    @rule(job=jobs, dead=st.booleans())
    def retry(self, job, dead):
        if dead:
            self.all("SELECT sluice.retry_dead(%s)", job)
        else:
            self.all("SELECT * FROM sluice.job_retry(%s)", [job])

    @rule()
    def promote(self):
        self.conn.execute("UPDATE sluice.jobs SET run_at = now() WHERE state = 'scheduled'")
        self.all("SELECT sluice.job_promote_scheduled(1000)")
        assert not self.all("SELECT 1 FROM sluice.jobs WHERE state = 'scheduled'")

    # -- what must always hold -------------------------------------------------------

    @invariant()
    def engine_invariants(self):
        found = {name: bad for name, sql in INVARIANTS.items() if (bad := self.all(sql))}
        assert not found, found


@pytest.mark.timeout(600)  # about 60 s on a loaded machine; the default 120 s is tight
def test_the_job_state_machine_keeps_its_invariants(database_url):
    class Machine(JobMachine):
        url = database_url

    run_state_machine_as_test(Machine, settings=SETTINGS)
