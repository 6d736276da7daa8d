"""Handlers the bench's worker processes load (SLUICE_TASK_MODULES=bench.tasks).

Times are `time.time()`: the wall clock every process on the machine shares,
and the clock PostgreSQL stamps commits with, so a handler's start can be set
against a client's commit or a parent's commit timestamp.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from sluice import JobContext, NonRetryableError, task

# The soak's execution log: one file per worker process, appended line by line
# with plain os.write, so what was written survives a SIGKILL of the process.
LOG_DIR_ENV = "SLUICE_BENCH_LOG_DIR"
_log_fd: int | None = None


@task(name="bench.stamp")
async def stamp(payload: Any) -> float:
    """Answers the time its handler started."""
    return time.time()


@task(name="bench.span")
async def span(payload: Any) -> list[float]:
    """Answers [start, end] of its handler (a DAG node)."""
    began = time.time()
    return [began, time.time()]


def _log(line: str) -> None:
    global _log_fd
    if _log_fd is None:
        directory = os.environ.get(LOG_DIR_ENV)
        if not directory:
            return
        path = os.path.join(directory, f"executions-{os.getpid()}.log")
        _log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_log_fd, line.encode())


@task(name="bench.chaos")
async def chaos(payload: dict[str, Any], ctx: JobContext) -> None:
    """The soak's job: sleeps `sleep` seconds, then fails with probability `fail`
    (`fatal` makes the failure non-retryable). Logs its start and its end."""
    _log(f"start {ctx.job_id} {ctx.attempt}\n")
    await asyncio.sleep(float(payload.get("sleep", 0)))
    if random.random() < float(payload.get("fail", 0)):  # noqa: S311 - not cryptography
        _log(f"fail {ctx.job_id} {ctx.attempt}\n")
        if payload.get("fatal"):
            raise NonRetryableError("chaos: fatal failure")
        raise RuntimeError("chaos: failure")
    _log(f"done {ctx.job_id} {ctx.attempt}\n")


@task(name="bench.items")
async def items(payload: dict[str, Any]) -> dict[str, Any]:
    """A list of `n` numbers for a map to fan out over (the dag scenario's map)."""
    return {"items": list(range(int(payload["n"])))}


@task(name="bench.relay")
async def relay(payload: dict[str, Any]) -> dict[str, Any]:
    """Hands on `data` (its parent's, rendered into the payload by the database), or
    `size` bytes of new data at the head of the chain, with [start, end] of its handler."""
    began = time.time()
    data = payload.get("data") or "x" * int(payload.get("size", 0))
    return {"data": data, "span": [began, time.time()]}
