"""`sleep`: waits `{"seconds": 1.5}` (tests, demos, rate shaping in DAGs)."""

from __future__ import annotations

import asyncio
from typing import Any

from sluice.core.tasks import SleepPayload
from sluice.worker.handlers.common import payload_of
from sluice.worker.registry import task


@task(name="sleep")
async def sleep(payload: Any) -> None:
    await asyncio.sleep(payload_of("sleep", payload, SleepPayload).seconds)
