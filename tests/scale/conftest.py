"""Fixtures for the scale tests: workers on any URL, in this event loop.

The scenarios under tests/scale/scenarios/ (failover, PgBouncer, network cuts)
start servers of their own and run only through `tests/scale/run.sh`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sluice.worker.runner import Worker
from tests.api.conftest import api_settings, make_client  # noqa: F401 - fixtures
from tests.test_migrations import empty_database  # noqa: F401 - a fixture
from tests.worker.helpers import worker_settings


@pytest.fixture
async def start_worker_on() -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start an in-process worker on a given URL; stopped at the end of the test."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(url: str, *, listen_url: str | None = None, **overrides: Any) -> Worker:
        worker = Worker(worker_settings(**overrides), url, listen_url=listen_url)
        task = asyncio.create_task(worker.run())
        running.append((worker, task))
        started = asyncio.create_task(worker.started.wait())
        done, _ = await asyncio.wait(
            {started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            started.cancel()
            task.result()
        assert started in done, "the worker did not start"
        assert worker.listener is not None
        await asyncio.wait_for(worker.listener.connected.wait(), 15)
        return worker

    yield start
    for worker, _ in running:
        worker.stop(hurry=True)
    for _, task in running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
