"""Sluice: a job queue and DAG workflow engine whose whole engine is PostgreSQL.

`sluice` is the one import root. What handler code touches::

    import sluice

    @sluice.task(name="reports.build")
    async def build_report(payload: dict, ctx: sluice.JobContext) -> dict:
        await ctx.progress({"step": 1})
        ...

The names are resolved on first use, so `import sluice.core.db` (the API, the
CLI, a migration) does not load the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.worker.context import JobContext, NonRetryableError
    from sluice.worker.registry import task

# public name -> module that defines it
_EXPORTS = {
    "JobContext": "sluice.worker.context",
    "NonRetryableError": "sluice.worker.context",
    "task": "sluice.worker.registry",
}

__all__ = ["JobContext", "NonRetryableError", "task"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
