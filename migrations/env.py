"""Alembic environment: migrate the `sluice` schema of SLUICE_DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from sluice.core.db import sqlalchemy_url

VERSION_SCHEMA = "sluice"


def database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or context.config.get_main_option("sqlalchemy.url")
        or os.environ.get("SLUICE_DATABASE_URL")
    )
    if not url:
        raise SystemExit("Set SLUICE_DATABASE_URL (or pass -x url=postgresql://...) to migrate.")
    return sqlalchemy_url(url)


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
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
