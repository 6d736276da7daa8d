"""Response bodies of the workers API (a worker is sluice.core.engine.Worker)."""

from __future__ import annotations

from msgspec import Struct

from sluice.core.engine import Worker


class WorkerList(Struct):
    items: list[Worker]
    next_cursor: None = None
