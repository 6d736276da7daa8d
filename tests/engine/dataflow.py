"""Helpers for the DAG data-flow tests: start a run from nodes, move its nodes
through the engine's own functions, read states, and the trigger-rule table
written independently of the engine (Airflow's trigger rules)."""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from tests.factories import WORKER, claim, fetch_job, rows, scalar

RULES = ("all_success", "none_failed", "all_done", "one_success", "one_failed")
OUTCOMES = ("succeeded", "failed", "cancelled", "skipped")


def expected_child(rule: str, outcomes: list[str]) -> str:
    """What a child under `rule` ends as when its parents end in `outcomes`, in
    that order: `ready` (it runs), or the state it is given instead. A rule
    decides as soon as it can (Airflow's trigger rules): under all_success a
    skipped parent skips the child at once, whatever the others do later."""
    s = f = k = 0
    for i, outcome in enumerate(outcomes):
        s += outcome == "succeeded"
        f += outcome in ("failed", "cancelled")
        k += outcome == "skipped"
        done = i == len(outcomes) - 1
        decided = {
            "all_success": "cancelled" if f else "skipped" if k else "ready" if done else None,
            "none_failed": "cancelled" if f else "ready" if done else None,
            "all_done": "ready" if done else None,
            "one_success": "ready" if s else ("cancelled" if f else "skipped") if done else None,
            "one_failed": "ready" if f else "skipped" if done else None,
        }[rule]
        if decided:
            return decided
    raise AssertionError("unreachable: the last parent always decides")


def possible_children(rule: str, outcomes: list[str]) -> set[str]:
    """What the child may end as when its parents end at once: either order."""
    return {expected_child(rule, outcomes), expected_child(rule, outcomes[::-1])}


async def start(
    conn: AsyncConnection, nodes: list[dict], params: dict | None = None, **definition: Any
) -> tuple[int, dict[str, int]]:
    """A run of `nodes` through sluice.dag_run_create: (run id, {node: job id})."""
    run_id = await scalar(
        conn,
        "SELECT sluice.dag_run_create('default', %s, %s)",
        Jsonb({"nodes": nodes, **definition}),
        Jsonb(params or {}),
    )
    return run_id, await node_ids(conn, run_id)


async def node_ids(conn: AsyncConnection, run_id: int) -> dict[str, int]:
    found = await rows(
        conn,
        "SELECT node, id FROM sluice.jobs WHERE run_id = %s AND map_index IS NULL",
        run_id,
    )
    return {r["node"]: r["id"] for r in found}


async def states(conn: AsyncConnection, run_id: int) -> dict[str, str]:
    found = await rows(
        conn,
        "SELECT node, state::text FROM sluice.jobs WHERE run_id = %s AND map_index IS NULL",
        run_id,
    )
    return {r["node"]: r["state"] for r in found}


async def job(conn: AsyncConnection, job_id: int) -> dict[str, Any]:
    found = await fetch_job(conn, job_id)
    return {**found, "state": str(found["state"])}


async def finish(conn: AsyncConnection, job_id: int, result: Any = None) -> None:
    """Claim `job_id` and complete it with `result`."""
    if (await fetch_job(conn, job_id))["state"] != "running":
        await claim(conn, job_id)
    done = await rows(
        conn,
        "SELECT * FROM sluice.job_complete_many(%s, %s, %s, %s::jsonb[])",
        WORKER,
        [job_id],
        [(await fetch_job(conn, job_id))["attempt"]],
        [Jsonb(result)],
    )
    assert done, f"job {job_id} was not completed"


async def fail_for_good(conn: AsyncConnection, job_id: int, error: str = "boom") -> None:
    """Claim `job_id` (unless running) and fail it without retry."""
    if (await fetch_job(conn, job_id))["state"] != "running":
        await claim(conn, job_id)
    job_row = await fetch_job(conn, job_id)
    failed = await rows(
        conn,
        "SELECT * FROM sluice.job_fail_many(%s, %s, %s, %s, '{false}')",
        WORKER,
        [job_id],
        [job_row["attempt"]],
        [error],
    )
    assert failed and failed[0]["state"] == "failed"


def node(node_id: str, depends_on: list[str] | None = None, **fields: Any) -> dict:
    """A normalised node (noop unless a task or wait is given)."""
    out = {"id": node_id, **fields}
    if "wait" not in fields:
        out.setdefault("task", "noop")
    if depends_on:
        out["depends_on"] = depends_on
    return out


def as_json(value: Any) -> str:
    return json.dumps(value)
