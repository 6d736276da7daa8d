"""Run a versioned SQL file from sql/migrations/ inside the current migration."""

from __future__ import annotations

from pathlib import Path

from alembic import op

SQL_MIGRATIONS = Path(__file__).resolve().parents[1] / "sql" / "migrations"


def execute(filename: str) -> None:
    """Execute `sql/migrations/<filename>` on the migration's connection, as written.

    The file goes to psycopg untouched (no SQLAlchemy bind-parameter parsing, no
    %-formatting: it carries no parameters), in the migration's transaction.
    """
    sql = (SQL_MIGRATIONS / filename).read_text()
    op.get_bind().connection.driver_connection.execute(sql)
