"""The handlers of the second kind of worker in the mixed-fleet test: a task the
workers of tests.worker.tasks do not have."""

from typing import Any

from sluice import JobContext, task


@task(name="fleet.only_b")
async def only_b(payload: Any, ctx: JobContext) -> dict[str, Any]:
    return {"worker": ctx.worker_id}
