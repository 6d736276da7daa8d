"""The API's connection pool: opened with the app, one connection per request
that needs one (handlers ask for a `conn` parameter)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from sluice.core.config import SettingsError
from sluice.core.db import open_pool
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
            app.state.pool = pool
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
        try:
            yield
        finally:
            await opened.close()

    return lifespan


async def provide_connection(state: State) -> AsyncIterator[AsyncConnection]:
    """A pooled autocommit connection for the length of one request."""
    async with state.pool.connection() as conn:
        yield conn
