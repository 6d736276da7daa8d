"""Helpers for the worker tests: settings for fast workers, waiting on conditions."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sluice.core.config import load
from sluice.core.protocol import ClaimedJob
from sluice.worker.settings import WorkerSettings
from tests.factories import scalar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# The test handlers, importable by name in this process and in worker processes.
TASKS_MODULE = "tests.worker.tasks"

# Quick enough for tests, still a real lease/heartbeat cycle.
FAST = {
    "lease_ttl": 2.0,
    "heartbeat_interval": 0.5,
    "poll_interval": 1.0,
    "shutdown_grace": 5.0,
    "leader_ttl": 1.5,
    "rescue_interval": 0.3,
    "promote_interval": 0.1,
    "cron_interval": 0.2,
    "task_modules": (TASKS_MODULE,),
    "maintenance": False,
}


def worker_settings(**overrides: Any) -> WorkerSettings:
    return load(WorkerSettings, environ={}, **{**FAST, **overrides})


def claimed(id: int = 7, *, attempt: int = 1, **fields: Any) -> ClaimedJob:
    """A job as sluice.job_claim answers it, without a database (for handler tests
    and for outcomes handed to a completer)."""
    now = dt.datetime.now(dt.UTC)
    values: dict[str, Any] = {
        "tenant": "default",
        "queue": "default",
        "task": "t",
        "payload": None,
        "priority": 0,
        "max_attempts": 3,
        "timeout": None,
        "run_id": None,
        "node": None,
        "run_at": now,
        "created_at": now,
        "started_at": now,
    }
    return ClaimedJob(id=id, attempt=attempt, **{**values, **fields})


async def wait_for(
    condition: Callable[[], Any], within: float = 30.0, what: str = "condition"
) -> Any:
    """Poll `condition` (sync or async) until it returns something truthy; fail
    after `within` seconds (by default a bound for a loaded 2-core machine, far
    above what any condition takes on an idle one)."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


async def job_state(conn, job_id: int) -> str:
    return await scalar(conn, "SELECT state::text FROM sluice.jobs WHERE id = %s", job_id)


async def wait_state(conn, job_id: int, *states: str, within: float = 30.0) -> str:
    async def reached() -> str | None:
        state = await job_state(conn, job_id)
        return state if state in states else None

    return await wait_for(reached, within, f"job {job_id} to be {'/'.join(states)}")


async def wait_let_go(worker: Any) -> None:
    """Wait until `worker` runs nothing and holds no lease. A job's outcome is
    visible once its completer committed; the worker settles the lease after."""
    await wait_for(
        lambda: not worker.executor.running and len(worker.leases) == 0,
        30,
        "the worker to let go of its jobs",
    )


async def attempts(conn, job_id: int) -> list[tuple]:
    """The attempt log of a job: (attempt, outcome, error, output, started_at, finished_at)."""
    cur = await conn.execute(
        "SELECT attempt, outcome, error, output, started_at, finished_at FROM sluice.job_attempts "
        "WHERE job_id = %s ORDER BY attempt",
        (job_id,),
    )
    return await cur.fetchall()


async def insert_diamond(conn) -> tuple[int, int, int, int]:
    """a -> (b, c) -> d, in plain SQL in one transaction, as another application would."""
    async with conn.transaction():
        ids = []
        for _ in range(4):
            cur = await conn.execute("INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id")
            ids.append((await cur.fetchone())[0])
        a, b, c, d = ids
        await conn.execute(
            "INSERT INTO sluice.job_edges (parent_id, child_id) "
            "VALUES (%s, %s), (%s, %s), (%s, %s), (%s, %s)",
            (a, b, a, c, b, d, c, d),
        )
    return a, b, c, d


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie (waiting for its parent to reap it)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True
