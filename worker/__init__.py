"""The Sluice worker: claims ready jobs, runs their handlers, records outcomes.

Users write handlers with this package's API::

    from worker import task, JobContext, NonRetryableError

    @task(name="reports.build")
    async def build_report(payload: dict, ctx: JobContext) -> dict:
        await ctx.progress({"step": 1})
        ...
"""

from worker.context import JobContext, NonRetryableError
from worker.registry import task

__all__ = ["JobContext", "NonRetryableError", "task"]
