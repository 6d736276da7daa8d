"""`sleep`: waits `{"seconds": 1.5}` (tests, demos, rate shaping in DAGs)."""

from __future__ import annotations

import asyncio
from typing import Any

from sluice.worker.handlers.payload import field, require_object
from sluice.worker.registry import task


@task(name="sleep")
async def sleep(payload: Any) -> None:
    seconds = field("sleep", require_object("sleep", payload), "seconds", (int, float), 0)
    await asyncio.sleep(max(0.0, float(seconds)))
