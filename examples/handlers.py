"""Example Python handlers. Workers (and the API, to accept the task names)
load them with:

    SLUICE_TASK_MODULES=examples.handlers sluice up     # or sluice worker / sluice api
"""

from __future__ import annotations

from typing import Any

from sluice import JobContext, NonRetryableError, task


@task(name="pipeline.transform")
async def transform(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Total the orders `extract` printed. The payload's `orders` is the template
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


@task(name="examples.split")
def split(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """The words to measure (examples/map_join.yaml maps `measure` over them)."""
    return {"words": list(payload["words"])}


@task(name="examples.measure")
def measure(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """One element of the map: `{{ item }}` and `{{ index }}` in its payload."""
    return {"word": payload["word"], "index": payload["index"], "length": len(payload["word"])}


@task(name="examples.join")
def join(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """The mapped node's result: its elements' results, in element order."""
    measured = payload["measured"]
    return {"words": [m["word"] for m in measured], "letters": sum(m["length"] for m in measured)}


@task(name="examples.count")
def count(payload: dict[str, Any], ctx: JobContext) -> dict[str, int]:
    """How many rows there are (examples/branch_when.yaml branches on it)."""
    return {"rows": int(payload["rows"])}


@task(name="examples.flaky")
def flaky(payload: dict[str, Any], ctx: JobContext) -> str:
    """Fail until attempt `succeed_on_attempt` (a sync handler: it runs in a thread).

    With `max_attempts` below that, the job lands in the dead-letter queue; a retry
    from the DLQ gives it fresh attempts, and it then succeeds."""
    if ctx.attempt < payload.get("succeed_on_attempt", 2):
        raise RuntimeError(f"attempt {ctx.attempt}: the service is not ready yet")
    return f"worked on attempt {ctx.attempt}"
