"""Stopping asyncio tasks for sure.

On Python 3.11, `asyncio.wait_for` can swallow a cancellation that arrives just
as what it waits for completes (python/cpython#86296); psycopg_pool waits for a
connection that way. A task cancelled at that instant carries on as if nothing
happened, and whoever awaits it waits forever. So cancel again until it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task], *, retry_every: float = 0.5) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again the
    ones that ignored it. Their exceptions are not raised."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry_every)
