"""Fixtures for the scale tests: workers on any URL, in this event loop.

The scenarios under tests/scale/scenarios/ (failover, PgBouncer, network cuts)
start servers of their own and run only through `tests/scale/run.sh`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sluice.worker.runner import Worker
from tests.api.conftest import api_settings, make_client  # noqa: F401 - fixtures
from tests.test_migrations import empty_database  # noqa: F401 - a fixture
from tests.worker.conftest import running_workers


@pytest.fixture
async def start_worker_on() -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start in-process workers on a given URL (`start(url, listen_url=None, **settings)`);
    stopped at the end of the test."""
    async with running_workers() as start:
        yield start
