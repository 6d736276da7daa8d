"""The prepared-statement probe through PgBouncer while other clients keep it busy.
A worker probes beside its own start-up now (its pool, writer, listener and first
claims run meanwhile, and other workers' traffic as before), so the answer must
hold under traffic: a busy pooler that loses prepared statements is still found,
and neither a busy direct connection nor a busy pooler that tracks them is taken
for one that loses them."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest

from sluice.core.db import prepared_statements_problem
from tests.scale.scenarios.servers import PgBouncer, Postgres, Processes, migrate
from tests.scale.scenarios.test_pgbouncer import NEWER

PROBES = 20


@pytest.fixture(scope="module")
def servers(procs: Processes) -> tuple[Postgres, PgBouncer]:
    pg = Postgres(procs, "pg-probe").start()
    bouncer = PgBouncer(procs, pg.port, name="pgbouncer-probe").start()
    migrate(bouncer.url())
    return pg, bouncer


async def busy(url: str, clients: int, stop: asyncio.Event, statement: str) -> None:
    """`clients` connections running `statement` (unprepared) until `stop`."""

    async def client() -> None:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, prepare_threshold=None
        ) as conn:
            while not stop.is_set():
                await conn.execute(statement)

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    try:
        await asyncio.sleep(0.2)  # under way before the probe starts
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def probes_under_traffic(
    url: str, clients: int, statement: str = "SELECT pg_backend_pid()"
) -> list[str | None]:
    stop = asyncio.Event()
    traffic = asyncio.create_task(busy(url, clients, stop, statement))
    try:
        await asyncio.sleep(0.3)
        return [await prepared_statements_problem(url) for _ in range(PROBES)]
    finally:
        stop.set()
        await traffic


@pytest.mark.parametrize(
    ("clients", "statement"),
    [
        (2, "SELECT pg_backend_pid()"),
        (6, "SELECT pg_backend_pid()"),
        (2, "SELECT pg_sleep(0.001)"),
        (3, "SELECT pg_sleep(0.003)"),
    ],
)
def test_the_probe_finds_a_busy_pgbouncer_that_loses_prepared_statements(
    servers, clients, statement
):
    _, bouncer = servers
    answers = asyncio.run(probes_under_traffic(bouncer.url(), clients, statement))
    assert all(a is not None and "pooler" in a for a in answers), answers


def test_the_probe_finds_nothing_wrong_on_a_busy_direct_connection(servers):
    pg, _ = servers
    assert asyncio.run(probes_under_traffic(pg.url(), 6)) == [None] * PROBES


@pytest.mark.skipif(not NEWER, reason="set SLUICE_SCALE_PGBOUNCER to a PgBouncer >= 1.21 binary")
def test_the_probe_keeps_them_on_behind_a_busy_pgbouncer_that_tracks_them(servers, procs):
    pg, _ = servers
    newer = PgBouncer(
        procs, pg.port, name="pgbouncer-probe-new", binary=NEWER, max_prepared_statements=200
    ).start()
    assert asyncio.run(probes_under_traffic(newer.url(), 6)) == [None] * PROBES
