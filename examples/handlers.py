"""Example Python handlers. Workers (and the API, to accept the task names)
load them with:

    SLUICE_TASK_MODULES=examples.handlers sluice up     # or sluice worker / sluice api
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sluice import JobContext, NonRetryableError, task


@task(name="pipeline.transform")
async def transform(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Read the orders `extract` wrote, total them, and write the totals for `load`.

    An async handler runs on the worker's event loop, so its file I/O goes to a
    thread; a plain `def` handler would run in the worker's thread pool instead."""
    source = Path(payload["input"])
    if not await asyncio.to_thread(source.exists):
        # The upstream step succeeded but left nothing: retrying will not help.
        raise NonRetryableError(f"{source} is missing")
    orders = json.loads(await asyncio.to_thread(source.read_text))
    await ctx.progress({"orders": len(orders)})
    totals = {
        "day": payload["day"],
        "orders": len(orders),
        "total": sum(order["amount"] for order in orders),
        "currency": payload.get("currency", "EUR"),
    }
    await asyncio.to_thread(Path(payload["output"]).write_text, json.dumps(totals))
    return totals  # stored as the job's result


@task(name="examples.flaky")
def flaky(payload: dict[str, Any], ctx: JobContext) -> str:
    """Fail until attempt `succeed_on_attempt` (a sync handler: it runs in a thread).

    With `max_attempts` below that, the job lands in the dead-letter queue; a retry
    from the DLQ gives it fresh attempts, and it then succeeds."""
    if ctx.attempt < payload.get("succeed_on_attempt", 2):
        raise RuntimeError(f"attempt {ctx.attempt}: the service is not ready yet")
    return f"worked on attempt {ctx.attempt}"
