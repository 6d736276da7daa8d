"""Connections to PostgreSQL: URL normalisation and the async connection pool."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

# Prepare a statement on the server after it has run this many times on a
# connection: the hot queries (claim, complete) skip parse and plan thereafter.
PREPARE_THRESHOLD = 5

# TCP keepalives, so a connection to a host that vanished (network cut) fails
# within a minute instead of waiting for a reply forever. Ignored on Unix sockets.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 20,
    "keepalives_interval": 5,
    "keepalives_count": 4,
}


def normalize_url(url: str) -> str:
    """A libpq URL from the forms users write (`postgres://`, SQLAlchemy's `+psycopg`)."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy URL using psycopg 3 (for Alembic)."""
    return "postgresql+psycopg://" + normalize_url(url)[len("postgresql://") :]


def connection_kwargs(*, prepare: bool = True, application_name: str = "sluice") -> dict[str, Any]:
    """Keyword arguments for every Sluice connection.

    Autocommit: each named query is its own transaction unless the caller opens
    one (`async with conn.transaction()`), so nothing holds a snapshot open by
    accident, which would keep vacuum from cleaning the job tables.
    """
    return {
        "autocommit": True,
        "prepare_threshold": PREPARE_THRESHOLD if prepare else None,
        "application_name": application_name,
        **KEEPALIVES,
    }


async def connect(
    url: str, *, prepare: bool = True, application_name: str = "sluice"
) -> psycopg.AsyncConnection:
    """One connection outside any pool (a LISTEN connection, the worker's writer)."""
    return await psycopg.AsyncConnection.connect(
        normalize_url(url), **connection_kwargs(prepare=prepare, application_name=application_name)
    )


async def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    prepare: bool = True,
    application_name: str = "sluice",
) -> AsyncConnectionPool:
    """Open (and wait for) an async pool of autocommit connections to `url`."""
    pool = AsyncConnectionPool(
        normalize_url(url),
        min_size=min_size,
        max_size=max_size,
        kwargs=connection_kwargs(prepare=prepare, application_name=application_name),
        open=False,
        name=application_name,
    )
    await pool.open(wait=True, timeout=30)
    return pool
