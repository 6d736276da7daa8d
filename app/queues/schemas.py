"""Request and response bodies of the queues API."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from sluice.core.engine import StateCounts
from sluice.core.jobs import QUEUE_CONCURRENCY_MAX


class Queue(StateCounts, kw_only=True):
    """A queue: jobs per state, the oldest ready job's wait, and its settings."""

    name: str
    oldest_ready_seconds: float
    paused: bool
    concurrency_limit: int | None


class QueueList(Struct):
    items: list[Queue]
    next_cursor: None = None


class Concurrency(Struct, forbid_unknown_fields=True):
    """At most `limit` jobs of the queue run at once across all workers (null: no limit)."""

    limit: Annotated[int, Meta(ge=1, le=QUEUE_CONCURRENCY_MAX)] | None
