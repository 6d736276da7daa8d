"""Fixtures for the Python API tests: in-process workers running tests.python_api.tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sluice.worker.runner import Worker
from tests.worker.conftest import start_worker

TASKS = ("tests.python_api.tasks",)

__all__ = ["start_worker"]


@pytest.fixture
async def worker(
    start_worker: Callable[..., Awaitable[Worker]],
) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start a worker running this folder's tasks (queues default and math)."""

    async def start(**overrides: Any) -> Worker:
        return await start_worker(
            **{"task_modules": TASKS, "queues": ("default", "math"), **overrides}
        )

    yield start
