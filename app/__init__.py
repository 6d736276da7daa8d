"""Sluice: a job queue and DAG workflow engine whose whole engine is PostgreSQL.

`sluice` is the one import root. What application and handler code touches::

    import sluice

    @sluice.task(queue="math", max_attempts=3)
    def add(a: int, b: int, ctx: sluice.JobContext) -> int:
        return a + b

    with psycopg.connect(url) as conn:             # or a SQLAlchemy session
        handle = add.enqueue(conn, a=1, b=2)       # in conn's transaction
    assert handle.result(timeout=10) == 3          # woken by the job's end

See docs/python.md. The names are resolved on first use, so `import
sluice.core.db` (the API, the CLI, a migration) does not load the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.core.enqueueing import Retry, Task, enqueue, start_run
    from sluice.core.waiting import (
        AsyncJobHandle,
        AsyncRunHandle,
        JobCancelled,
        JobError,
        JobFailed,
        JobHandle,
        RunError,
        RunHandle,
    )
    from sluice.worker.context import JobContext, NonRetryableError
    from sluice.worker.registry import task

# public name -> module that defines it
_EXPORTS = {
    "JobContext": "sluice.worker.context",
    "NonRetryableError": "sluice.worker.context",
    "task": "sluice.worker.registry",
    "Task": "sluice.core.enqueueing",
    "Retry": "sluice.core.enqueueing",
    "enqueue": "sluice.core.enqueueing",
    "start_run": "sluice.core.enqueueing",
    "JobHandle": "sluice.core.waiting",
    "AsyncJobHandle": "sluice.core.waiting",
    "RunHandle": "sluice.core.waiting",
    "AsyncRunHandle": "sluice.core.waiting",
    "JobError": "sluice.core.waiting",
    "JobFailed": "sluice.core.waiting",
    "JobCancelled": "sluice.core.waiting",
    "RunError": "sluice.core.waiting",
}

__all__ = [
    "AsyncJobHandle",
    "AsyncRunHandle",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobHandle",
    "NonRetryableError",
    "Retry",
    "RunError",
    "RunHandle",
    "Task",
    "enqueue",
    "start_run",
    "task",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
