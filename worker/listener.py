"""The worker's LISTEN connection: wake-ups for new ready jobs, and control
messages (cancel, pause, resume).

One dedicated connection, outside the pool: a pooled connection would be handed
to other work and miss notifications. When it drops, the listener reconnects
with backoff, listens again and tells the worker to catch up, since
notifications sent while it was away are lost. The connection is checked every
`check_interval` so a silently dead one (network cut) is noticed too.

The LISTEN URL may differ from the main one (SLUICE_LISTEN_URL): behind PgBouncer
in transaction mode, LISTEN must go straight to PostgreSQL, since the pooler hands
the server connection that listened to other clients and the notifications are
lost. After each (re)connection a self-test sends a unique token through the
main URL and expects it here within a few seconds; if it does not come, the log
and /ready say so (wake-ups then fall back to the poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.core.db import NotificationCheck, connect, notification_self_test, self_test_token
from sluice.core.logging import error_line

log = logging.getLogger("sluice.worker")

JOBS_CHANNEL = "sluice_jobs"
CONTROL_CHANNEL = "sluice_control"


class Listener:
    """Dispatches notifications to callbacks; reconnects on its own."""

    def __init__(
        self,
        url: str,
        *,
        notify_url: str | None = None,
        on_jobs: Callable[[str], None],
        on_control: Callable[[dict[str, Any]], None],
        on_connected: Callable[[], None],
        check_interval: float = 10.0,
        max_backoff: float = 5.0,
        self_test_within: float = 5.0,
    ) -> None:
        self._url = url
        self._notify_url = notify_url or url
        self._self_test_within = self_test_within
        self._on_jobs = on_jobs
        self._on_control = on_control
        self._on_connected = on_connected
        self._check_interval = check_interval
        self._max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.connections = 0
        self.notifications: NotificationCheck | None = None

    async def run(self) -> None:
        delay = 0.05
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                # One statement per connection: nothing to gain from preparing it.
                conn = await connect(self._url, prepare=False, application_name="sluice-listener")
                await protocol.worker_listen(conn)
                self.connections += 1
                if self.connections > 1:
                    log.info("listener reconnected")
                self.connected.set()
                delay = 0.05
                # Anything sent while we were not listening is lost: claim as if notified.
                self._on_connected()
                self.notifications = await notification_self_test(
                    conn, self._notify_url, within=self._self_test_within, on_other=self._dispatch
                )
                await self._receive(conn)
            # Not only connection errors: after a failover a fixed-host URL may land on
            # a standby, where LISTEN is refused; keep trying until the primary is back.
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning(
                    "listener connection lost, reconnecting in %.2fs: %s",
                    delay,
                    error_line(exc),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def _receive(self, conn: psycopg.AsyncConnection) -> None:
        while True:
            async for note in conn.notifies(timeout=self._check_interval):
                if self._dispatch(note):
                    # Let the claim this wake-up scheduled go out before this task
                    # waits on the connection again: re-arming psycopg's wait is a
                    # step of Python the claim need not queue behind (issue 15).
                    await asyncio.sleep(0)
            # Quiet for a while: make sure the connection is still there.
            await AsyncConnectionPool.check_connection(conn)

    def _dispatch(self, note: psycopg.Notify) -> bool:
        """Hand `note` to its callback; True for a wake-up (jobs channel)."""
        if note.channel == JOBS_CHANNEL:
            self._on_jobs(note.payload)
            return True
        if self_test_token(note.payload) is None:  # another process's self-test: not ours
            self._control(note.payload)
        return False

    def _control(self, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("ignored a control message that is not JSON")
            return
        if isinstance(message, dict):
            self._on_control(message)
