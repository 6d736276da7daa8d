"""Handlers for the scenarios (SLUICE_TASK_MODULES=tests.scale.scenarios.tasks).

Each execution is written to a file before the handler returns, so executions
are counted even when the database never hears of them (an outage, a cut link):
a job executed twice shows up twice there, whatever the database recorded.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sluice import JobContext, task


def record(ctx: JobContext, what: str) -> None:
    path = os.environ.get("SLUICE_SCALE_EXEC_LOG")
    if path:
        line = f"{ctx.job_id} {ctx.attempt} {ctx.worker_id} {what}\n"
        # One write(2) with O_APPEND: lines from several processes do not interleave.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


@task
async def tick(payload: Any, ctx: JobContext) -> dict[str, Any]:
    """Runs `seconds` (default 0), recording its start and its end."""
    record(ctx, "start")
    await asyncio.sleep(float((payload or {}).get("seconds", 0)))
    record(ctx, "end")
    return {"worker": ctx.worker_id, "attempt": ctx.attempt}
