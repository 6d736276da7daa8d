"""Putting jobs where a dashboard test wants them, through the engine's own SQL
functions (a sync connection: the browser tests are sync), as a worker would."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

WORKER = "dashboard-test-worker"


def enqueue(sql: psycopg.Connection, task: str = "noop", **arguments: Any) -> int:
    """A new job, from sluice.enqueue (named arguments: queue, tenant, payload...)."""
    if "payload" in arguments:
        arguments["payload"] = Jsonb(arguments["payload"])
    names = "".join(f", {name} => %({name})s" for name in arguments)
    row = sql.execute(
        f"SELECT sluice.enqueue(%(task)s{names})",  # argument names are the test's own
        {"task": task, **arguments},
    ).fetchone()
    assert row is not None
    return row[0]


def claim(sql: psycopg.Connection, queue: str = "default", limit: int = 1) -> list[dict]:
    """Claim up to `limit` ready jobs of `queue`, as a worker does (sluice.job_claim)."""
    with sql.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM sluice.job_claim(%s, %s, %s, '1 minute')", (WORKER, [queue], limit)
        ).fetchall()


def complete(sql: psycopg.Connection, job: dict, result: Any = None) -> None:
    """Finish a claimed job successfully (sluice.job_complete_many)."""
    done = sql.execute(
        "SELECT * FROM sluice.job_complete_many(%s, %s, %s, %s::jsonb[], %s::text[])",
        (WORKER, [job["id"]], [job["attempt"]], [Jsonb(result)], ["all good\n"]),
    ).fetchall()
    assert done == [(job["id"],)], f"job {job['id']} was not running"


def fail(sql: psycopg.Connection, job: dict, error: str = "boom", retryable: bool = False) -> None:
    """Fail a claimed job's attempt (sluice.job_fail_many); not retryable: to the DLQ."""
    sql.execute(
        "SELECT * FROM sluice.job_fail_many(%s, %s, %s, %s, %s, NULL, %s::text[])",
        (WORKER, [job["id"]], [job["attempt"]], [error], [retryable], ["Traceback: boom\n"]),
    )


def dead_job(sql: psycopg.Connection, queue: str = "default", **arguments: Any) -> int:
    """A job that ended failed, with its dead letter. (Its priority puts it first
    in the queue, so the claim takes it and no other ready job.)"""
    job_id = enqueue(sql, queue=queue, max_attempts=1, priority=-1000, **arguments)
    [job] = claim(sql, queue)
    assert job["id"] == job_id
    fail(sql, job, error=f"job {job_id} exploded")
    return job_id


def register_worker(sql: psycopg.Connection, worker_id: str, queues: list[str]) -> None:
    """A worker that stays alive for the whole test without a heartbeat: alive
    means heard from within three heartbeat intervals (sluice.worker_status),
    and a browser test on a loaded machine outlasts three of 5 s."""
    sql.execute(
        "SELECT sluice.worker_register(%s, 'test-host', 4242, %s, 4, '1 hour', 'test')",
        (worker_id, queues),
    )


def scalar(sql: psycopg.Connection, query: str, *params: Any) -> Any:
    row = sql.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def node_job(sql: psycopg.Connection, run_id: int, node: str) -> int:
    """The job of node `node` of run `run_id` (a mapped node's own row)."""
    return scalar(
        sql,
        "SELECT id FROM sluice.jobs WHERE run_id = %s AND node = %s AND map_index IS NULL",
        run_id,
        node,
    )


def node_state(sql: psycopg.Connection, run_id: int, node: str) -> str:
    """The state of node `node` of run `run_id`."""
    return scalar(
        sql, "SELECT state::text FROM sluice.jobs WHERE id = %s", node_job(sql, run_id, node)
    )


def finish_job(sql: psycopg.Connection, job_id: int, result: Any = None) -> None:
    """Claim ready job `job_id` alone and complete it with `result`: it is claimed
    from a queue of its own for the moment, so no other ready job is taken."""
    queue = scalar(sql, "SELECT queue FROM sluice.jobs WHERE id = %s", job_id)
    lane = f"lane-{job_id}"
    sql.execute("UPDATE sluice.jobs SET queue = %s WHERE id = %s", (lane, job_id))
    [job] = claim(sql, lane)
    sql.execute("UPDATE sluice.jobs SET queue = %s WHERE id = %s", (queue, job_id))
    assert job["id"] == job_id, f"claimed job {job['id']}, not {job_id}"
    complete(sql, job, result)
