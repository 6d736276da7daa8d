"""The API's connection pools: opened with the app, one connection per request
that needs one (handlers ask for a `conn` parameter). `state.read_pool` serves
reads that tolerate replication lag (SLUICE_READ_DATABASE_URL; the primary pool
when unset): see docs/scaling.md for what may use it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from sluice.core.config import SettingsError
from sluice.core.db import check_notifications, open_pool, open_read_pool
from sluice.http.settings import ApiSettings


def pool_lifespan(
    settings: ApiSettings, pool: AsyncConnectionPool | None = None
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Open the pool when the app starts and close it when it stops. A `pool`
    passed in (a process that runs the API beside other services) is used as
    is and left open."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if pool is not None:
            app.state.pool = app.state.read_pool = pool
            yield
            return
        if not settings.database_url:
            raise SettingsError("SLUICE_DATABASE_URL is not set")
        opened = await open_pool(
            settings.database_url,
            max_size=settings.pool_size,
            prepare=settings.db_prepare,
            application_name="sluice-api",
        )
        app.state.pool = opened
        app.state.read_pool = await open_read_pool(
            settings.read_database_url,
            opened,
            max_size=settings.pool_size,
            prepare=settings.db_prepare,
        )
        # The API does not listen itself; it checks that the workers' LISTEN URL gets
        # what is sent through the main URL, so /ready can warn about a pooler.
        self_test = asyncio.create_task(
            check_notifications(settings.listen_url or settings.database_url, settings.database_url)
        )
        try:
            yield
        finally:
            self_test.cancel()
            if app.state.read_pool is not opened:
                await app.state.read_pool.close()
            await opened.close()

    return lifespan


async def provide_connection(state: State) -> AsyncIterator[AsyncConnection]:
    """A pooled autocommit connection for the length of one request."""
    async with state.pool.connection() as conn:
        yield conn


async def provide_read_connection(state: State) -> AsyncIterator[AsyncConnection]:
    """A pooled connection for reads that tolerate replication lag (never a write)."""
    async with state.read_pool.connection() as conn:
        yield conn
