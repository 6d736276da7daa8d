"""The long-poll of `GET /api/v1/jobs/{id}?wait=30s` and `GET /api/v1/runs/{id}?wait=30s`:
answer once the job or run has ended, or when the wait is over, whichever is first.

A wait holds no pooled connection: the hub (sluice.core.waiting.Waiters, one
LISTEN connection for the whole process, opened with the app) is woken by the
end's notification, and the pool is used only for the reads before and after.
Waits are bounded: at most SLUICE_API_MAX_WAITS at once in a process (past it,
a 503 that says so, at once), each at most MAX_WAIT_SECONDS long.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.params import QueryParameter
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from sluice.core.durations import parse_duration
from sluice.core.waiting import Waiters
from sluice.http.errors import Refusal, invalid
from sluice.http.pool import lend
from sluice.http.settings import ApiSettings

#: The longest `wait` a request may ask for, in seconds.
MAX_WAIT_SECONDS = 60.0

WaitParam = Annotated[
    str | None,
    QueryParameter(
        max_length=16,
        description=(
            "Wait up to this long (`30s`, `1m`, `2.5`: seconds; at most 60s) for the end "
            "before answering; the answer is the same as without it. Held by no database "
            "connection; 503 when too many requests wait already."
        ),
    ),
]


def wait_seconds(value: str | None) -> float | None:
    """The `wait` parameter in seconds (None: do not wait); 422 when it is not a
    duration of at most MAX_WAIT_SECONDS."""
    if value is None:
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        seconds = parse_duration(text)
    else:
        seconds = parse_duration(number)
    if seconds is None or seconds > MAX_WAIT_SECONDS:
        raise invalid([("wait", f"must be a duration of at most {MAX_WAIT_SECONDS:g}s (30s, 1m)")])
    return seconds


class Waiting:
    """The app's hub, its bound on concurrent waits, and the short-lived connections
    a long-poll reads through (lent as every request's are: sluice.http.pool.lend)."""

    def __init__(self, pool: AsyncConnectionPool, settings: ApiSettings) -> None:
        self._pool = pool
        self._settings = settings
        self.hub = Waiters(settings.listen_url or settings.database_url or "", self.connection)
        self.limit = settings.max_waits
        self.count = 0

    def connection(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A pooled connection to the primary, for one read."""
        return lend(self._pool, self._settings)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Waiters]:
        """A place among the waits under way, or a 503 at once when there is none."""
        if self.count >= self.limit:
            raise Refusal(
                503,
                f"Too many requests are waiting already (SLUICE_API_MAX_WAITS={self.limit}); "
                "retry, or ask without `wait`.",
            )
        self.count += 1
        try:
            yield self.hub
        finally:
            self.count -= 1


def waiting_lifespan(
    settings: ApiSettings,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Open the hub with the app (after the pool, which it reads through) and close it
    with it. It LISTENs through SLUICE_LISTEN_URL when set, as workers do."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.waiting = waits = Waiting(app.state.pool, settings)
        try:
            yield
        finally:
            await waits.hub.close()

    return lifespan


def waiting(state: State) -> Waiting:
    """The app's waits (see waiting_lifespan)."""
    return state.waiting
