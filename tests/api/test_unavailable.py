"""When the API cannot get an answer from its database, clients get a prompt 503
with a JSON body saying so and a Retry-After header: never a 500, never a hang.

The database is made unreachable for real: through a TCP proxy that is stopped
(every connection closed, new ones refused: a server gone) or frozen (every
socket kept open, nothing passed on: a server that hangs, or a path that
acknowledges packets and never answers); read-only, as a standby is after a
failover; or stuck behind a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from sluice.http.errors import RETRY_AFTER_SECONDS

API = "/api/v1"
JOB = {"task": "noop", "queue": "cut"}


class Proxy:
    """TCP on 127.0.0.1 in front of the test server's Unix socket (trusted, so no
    password), in threads of its own: the API's connections are real TCP ones."""

    def __init__(self, socket_path: Path, port: int = 0) -> None:
        self.socket_path = socket_path
        self.frozen = False
        self.stopped = False
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.successor: Proxy | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.sockets.append(client)
            if self.frozen:
                continue  # accepted by the kernel, never answered
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(str(self.socket_path))
            self.sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        # OSError throughout: `stop` may close the sockets before this thread starts.
        with contextlib.suppress(OSError):
            src.settimeout(0.05)
            while not self.stopped:
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                while self.frozen and not self.stopped:
                    time.sleep(0.05)  # the rest waits, acknowledged, in the kernel's buffer
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        """The server is gone: every connection closed, new ones refused."""
        self.stopped = True
        for s in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                s.close()
        if self.successor is not None:
            self.successor.stop()

    def restart(self) -> None:
        """The server is back, at the same address (after `stop`)."""
        self.successor = Proxy(self.socket_path, self.port)


@pytest.fixture
def proxy(pg_server) -> Iterator[Proxy]:
    proxy = Proxy(Path(pg_server.socket_dir) / f".s.PGSQL.{pg_server.port}")
    yield proxy
    proxy.stop()


def through(proxy: Proxy, database_url: str) -> str:
    return (
        f"postgresql://postgres@127.0.0.1:{proxy.port}/{conninfo_to_dict(database_url)['dbname']}"
    )


def assert_unavailable(answer, *, saying: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    body = answer.json()
    assert body["status"] == 503 and body["error"] == "unavailable"
    assert body["message"].startswith("The database is unavailable: ")
    assert saying in body["message"]


async def timed(request):
    """(answer, seconds it took). A request that hangs is ended by pytest's timeout."""
    started = time.monotonic()
    answer = await request
    return answer, time.monotonic() - started


async def accepted_within(client, headers, seconds: float):
    """The first submission not refused with a 503 (each 503 checked on the way)."""
    async with asyncio.timeout(seconds):
        while (
            answer := await client.post(f"{API}/jobs", json=JOB, headers=headers)
        ).status_code == 503:
            assert_unavailable(answer, saying="")
            await asyncio.sleep(0.1)
    return answer


async def test_a_database_gone_gets_a_prompt_503_with_the_default_settings(
    make_client, proxy, database_url, admin
):
    client = await make_client(database_url=through(proxy, database_url))
    assert (await client.post(f"{API}/jobs", json=JOB, headers=admin)).status_code == 201
    proxy.stop()
    # The pooled connection breaks at once; after it the pool cannot connect again
    # and a request waits at most SLUICE_API_DB_TIMEOUT (3 s), not psycopg's 30 s.
    broken = await client.post(f"{API}/jobs", json=JOB, headers=admin)
    assert_unavailable(broken, saying="connection to it failed")
    for path in ("/jobs", "/queues", "/jobs/1"):
        answer, seconds = await timed(client.get(f"{API}{path}", headers=admin))
        assert_unavailable(answer, saying="")
        assert seconds < 5
    # Back: the pool reconnects by itself within seconds (it gave up its doubling
    # delay after 2 x SLUICE_API_DB_TIMEOUT, and the next request tries at once).
    proxy.restart()
    assert (await accepted_within(client, admin, 5)).status_code == 201


async def test_a_frozen_database_gets_a_bounded_503(make_client, proxy, database_url, admin):
    client = await make_client(
        database_url=through(proxy, database_url), statement_timeout=1.0, db_timeout=1.0
    )
    assert (await client.get(f"{API}/jobs", headers=admin)).status_code == 200
    proxy.frozen = True
    # The statement waits for an answer that never comes and TCP sees nothing wrong
    # (the proxy's kernel acknowledges): the deadline cancels it, the cancel request
    # is not answered either, and the socket is shut after the grace.
    answer, seconds = await timed(client.get(f"{API}/jobs", headers=admin))
    assert_unavailable(answer, saying="connection to it failed")
    assert seconds < 4
    # No connection to be had: a new one does not get through the frozen proxy.
    answer, seconds = await timed(client.post(f"{API}/jobs", json=JOB, headers=admin))
    assert_unavailable(answer, saying="SLUICE_API_DB_TIMEOUT")
    assert seconds < 3


async def test_a_statement_stuck_behind_a_lock_is_cancelled_at_the_deadline(
    make_client, connect, admin
):
    client = await make_client(statement_timeout=1.0)
    job = (await client.post(f"{API}/jobs", json=JOB, headers=admin)).json()["id"]
    holder = await connect()
    async with holder.transaction():
        await holder.execute("LOCK TABLE sluice.jobs IN ACCESS EXCLUSIVE MODE")
        answer, seconds = await timed(client.get(f"{API}/jobs/{job}", headers=admin))
        assert_unavailable(answer, saying="did not finish in time")
        assert seconds < 3
        backends = await holder.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        assert (await backends.fetchone()) == (0,)  # the server let go of the statement
    # Lock released: the API serves again (the cancelled connection was not reused).
    assert (await client.get(f"{API}/jobs/{job}", headers=admin)).status_code == 200


async def test_a_read_only_database_gets_503_and_the_api_comes_back_by_itself(
    make_client, database_url, db, admin
):
    dbname = conninfo_to_dict(database_url)["dbname"]
    # What a URL naming one host meets after a switchover: that host is a standby.
    await db.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    client = await make_client()
    refused = await client.post(f"{API}/jobs", json=JOB, headers=admin)
    assert_unavailable(refused, saying="read-only")
    assert (await client.get(f"{API}/jobs", headers=admin)).status_code == 200  # reads work
    await db.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')

    # The pool replaces its read-only connections; nothing was written meanwhile.
    answer = await accepted_within(client, admin, 10)
    assert answer.status_code == 201, answer.text
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM sluice.jobs").fetchone() == (1,)
