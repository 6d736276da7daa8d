"""Example Python handlers. Workers (and the API, to accept the task names)
load them with:

    SLUICE_TASK_MODULES=examples.handlers sluice up     # or sluice worker / sluice api
"""

from __future__ import annotations

import random
from typing import Any

from sluice import JobContext, NonRetryableError, task


@task(name="pipeline.extract")
def extract(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """A day's orders (made up, the same for the same day), returned as the result:
    the database hands them to `transform` (examples/pipeline.yaml), on whichever
    worker and host it runs, so no file is shared."""
    rng = random.Random(payload["day"])  # noqa: S311 - made-up data, not secrets
    orders = [{"order": n, "amount": rng.randint(5, 120)} for n in range(payload.get("count", 25))]
    return {"day": payload["day"], "orders": orders}


@task(name="pipeline.transform")
async def transform(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Total the orders `extract` returned. The payload's `orders` is the template
    `{{ nodes.extract.result.orders }}`, rendered by the database when this node
    became ready; the result goes on to `load` the same way."""
    orders = payload["orders"]
    if not isinstance(orders, list):
        # The upstream step succeeded but returned no list: retrying will not help.
        raise NonRetryableError(f"orders must be a list, got {type(orders).__name__}")
    await ctx.progress({"orders": len(orders)})
    return {
        "day": payload["day"],
        "orders": len(orders),
        "total": sum(order["amount"] for order in orders),
        "currency": payload.get("currency", "EUR"),
    }


@task(name="examples.flaky")
def flaky(payload: dict[str, Any], ctx: JobContext) -> str:
    """Fail until attempt `succeed_on_attempt` (a sync handler: it runs in a thread).

    With `max_attempts` below that, the job lands in the dead-letter queue; a retry
    from the DLQ gives it fresh attempts, and it then succeeds."""
    if ctx.attempt < payload.get("succeed_on_attempt", 2):
        raise RuntimeError(f"attempt {ctx.attempt}: the service is not ready yet")
    return f"worked on attempt {ctx.attempt}"
