"""Options shared by several commands."""

from __future__ import annotations

import click

database_url = click.option(
    "--database-url",
    envvar="SLUICE_DATABASE_URL",
    metavar="URL",
    help="PostgreSQL URL [env: SLUICE_DATABASE_URL].",
)


def require_database_url(url: str | None) -> str:
    if not url:
        raise click.UsageError(
            "No database: pass --database-url or set SLUICE_DATABASE_URL "
            "(or use `sluice up`, which starts an embedded PostgreSQL)."
        )
    return url
