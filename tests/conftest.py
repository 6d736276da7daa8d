"""Test harness: one PostgreSQL server per test session, started by the tests.

The server is Sluice's own embedded cluster (run as the `postgres` user when the
tests run as root). pytest-postgresql's janitor builds a template database once
from the Alembic migrations, then clones a fresh database from it for every test
that asks for one.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from pytest_postgresql.janitor import DatabaseJanitor

from sluice.core import migrate
from sluice.core.db import connection_kwargs, open_pool
from sluice.core.embedded import SUPERUSER, EmbeddedPostgres

# Throwaway data: trade durability for speed.
TEST_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "256MB",
    "log_min_messages": "fatal",
    # Lets a test count how often the engine plans its statements (test_hot_paths.py).
    "shared_preload_libraries": "pg_stat_statements",
}
TEMPLATE = "sluice_template"


def pytest_report_header() -> str:
    """Which PostgreSQL the session runs on (CI runs the suite on two)."""
    from sluice.core.embedded import EmbeddedError, find_bindir

    try:
        return f"postgresql: {find_bindir()}"
    except EmbeddedError as exc:
        return f"postgresql: none found ({exc})"


_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """The session's PostgreSQL server (a fresh cluster in a temporary directory)."""
    # Not under pytest's basetemp: that is private to the current (root) user, and
    # the server may have to run as `postgres`.
    data_dir = Path(tempfile.mkdtemp(prefix="sluice-test-pg-"))
    server = EmbeddedPostgres(data_dir, settings=TEST_SERVER_SETTINGS)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _janitor(server: EmbeddedPostgres, dbname: str, **kwargs) -> DatabaseJanitor:
    return DatabaseJanitor(
        user=SUPERUSER,
        host=str(server.socket_dir),
        port=server.port,
        dbname=dbname,
        **kwargs,
    )


# The UTC day the template was migrated on (its history partitions start then).
_template_day: list[dt.date] = []


def _migrate_template(server: EmbeddedPostgres, janitor: DatabaseJanitor) -> None:
    _template_day[:] = [dt.datetime.now(dt.UTC).date()]
    janitor.load(lambda **_: migrate.upgrade(server.url(TEMPLATE)))


@pytest.fixture(scope="session")
def template_db(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """Name of the template database, migrated once per session (and again on
    the first clone after midnight UTC: see database_url)."""
    janitor = _janitor(pg_server, TEMPLATE, as_template=True)
    janitor.drop()
    with janitor:
        _migrate_template(pg_server, janitor)
        yield TEMPLATE


def _migrated_today(server: EmbeddedPostgres, template: str) -> None:
    """Migrate the template again on the first clone after midnight UTC: a
    database migrated yesterday has yesterday's history partition, over and so
    closable, which tests counting the partitions they close do not expect."""
    if _template_day != [dt.datetime.now(dt.UTC).date()]:
        janitor = _janitor(server, template, as_template=True)
        janitor.drop()
        janitor.init()
        _migrate_template(server, janitor)


@pytest.fixture
def database_url(pg_server: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """URL of a fresh database cloned from the migrated template, dropped afterwards."""
    _migrated_today(pg_server, template_db)
    dbname = f"test_{os.getpid()}_{next(_database_numbers)}"
    with _janitor(pg_server, dbname, template_dbname=template_db):
        yield pg_server.url(dbname)


@pytest.fixture
def other_database_url(pg_server: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """A second migrated database on the same server: a stand-in for a replica
    whose contents differ, so a test can tell which of the two answered."""
    _migrated_today(pg_server, template_db)
    dbname = f"other_{os.getpid()}"
    with _janitor(pg_server, dbname, template_dbname=template_db):
        yield pg_server.url(dbname)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """An autocommit connection to the test's database."""
    async with await psycopg.AsyncConnection.connect(database_url, **connection_kwargs()) as conn:
        yield conn


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    """A connection pool on the test's database, as the worker and API use."""
    pool = await open_pool(database_url, min_size=1, max_size=20)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def connect(database_url: str):
    """Open extra connections to the test's database (closed at the end of the test)."""
    opened: list[psycopg.AsyncConnection] = []

    async def _connect(**kwargs) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(
            database_url, **{**connection_kwargs(), **kwargs}
        )
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        await conn.close()
