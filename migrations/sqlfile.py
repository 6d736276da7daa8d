"""Run versioned SQL files inside the current migration."""

from __future__ import annotations

from pathlib import Path

from alembic import op

from sluice.core.queries import SQL_DIR


def execute_file(path: Path) -> None:
    """Execute one SQL file on the migration's connection, as written.

    The file goes to psycopg untouched (no SQLAlchemy bind-parameter parsing, no
    %-formatting: it carries no parameters), in the migration's transaction.
    """
    op.get_bind().connection.driver_connection.execute(path.read_text())


def execute(filename: str) -> None:
    """Execute `sql/migrations/<filename>`."""
    execute_file(SQL_DIR / "migrations" / filename)


def execute_schema() -> None:
    """Execute every file of `sql/schema/`, in name order: the engine as it is now."""
    for path in sorted((SQL_DIR / "schema").glob("*.sql")):
        execute_file(path)
