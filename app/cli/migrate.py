"""`sluice migrate`: create or upgrade the sluice schema."""

from __future__ import annotations

import click

from sluice.cli.options import database_url, require_database_url


@click.command()
@database_url
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--down", is_flag=True, help="Migrate down to --revision instead (e.g. base).")
def migrate(database_url: str | None, revision: str, down: bool) -> None:
    """Create or upgrade the `sluice` schema (Alembic migrations).

    Safe to run at every deploy: it does nothing when the schema is at head.
    """
    from sluice.core import migrate as migrations

    url = require_database_url(database_url)
    if down:
        migrations.downgrade(url, revision)
    else:
        migrations.upgrade(url, revision)
    click.echo(f"sluice schema at {revision if down else migrations.head_revision()}")
