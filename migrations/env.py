"""Alembic environment: migrate the `sluice` schema of SLUICE_DATABASE_URL."""

from __future__ import annotations

import functools
import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from sluice.core.db import connect_sync

VERSION_SCHEMA = "sluice"


def database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or context.config.get_main_option("sqlalchemy.url")
        or os.environ.get("SLUICE_DATABASE_URL")
    )
    if not url:
        raise SystemExit("Set SLUICE_DATABASE_URL (or pass -x url=postgresql://...) to migrate.")
    return url


def run_migrations_online() -> None:
    # SQLAlchemy's URL parser knows one host and port; libpq knows more (several
    # hosts with target_session_attrs, Unix sockets, key=value strings, services).
    # So the engine gets its connection from psycopg with the URL as written, and
    # the URL given to SQLAlchemy only names the dialect.
    engine = create_engine(
        "postgresql+psycopg://",
        creator=functools.partial(connect_sync, database_url()),
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        # Sluice keeps its version table in its own schema, apart from any
        # alembic_version the host application has; the schema must exist first.
        connection.execute(text("CREATE SCHEMA IF NOT EXISTS sluice"))
        connection.commit()
        context.configure(
            connection=connection,
            version_table_schema=VERSION_SCHEMA,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database.")
run_migrations_online()
