"""`noop`: does nothing (DAG joins, tests, benchmarks)."""

from __future__ import annotations

from typing import Any

from sluice.worker.registry import task


@task(name="noop")
async def noop(payload: Any) -> None:
    return None
