"""Migrations: they build exactly what sql/schema/ describes, and go down and up."""

import subprocess

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from sluice.core import migrate
from sluice.core.embedded import SUPERUSER
from sluice.core.queries import SQL_DIR


@pytest.fixture
def empty_database(pg_server):
    """A database with nothing of Sluice in it (not cloned from the template)."""
    created = []

    def make(name: str) -> str:
        janitor = DatabaseJanitor(
            user=SUPERUSER, host=str(pg_server.socket_dir), port=pg_server.port, dbname=name
        )
        janitor.drop()
        janitor.init()
        created.append(janitor)
        return pg_server.url(name)

    yield make
    for janitor in created:
        janitor.drop()


def dump_schema(pg_server, url: str) -> str:
    """The sluice schema as pg_dump prints it (Alembic's own table left out)."""
    dbname = url.split("/")[3].split("?")[0]
    result = subprocess.run(
        [
            str(pg_server.bindir / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--schema=sluice",
            "--exclude-table=sluice.alembic_version",
            "--host",
            str(pg_server.socket_dir),
            "--port",
            str(pg_server.port),
            "--username",
            SUPERUSER,
            dbname,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # Recent pg_dump brackets its output with \restrict lines holding a random key.
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def load_schema_files(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for path in sorted((SQL_DIR / "schema").glob("*.sql")):
            conn.execute(path.read_text())


def test_migrations_build_the_catalog_that_sql_schema_describes(pg_server, empty_database):
    """Until the first release revision 0001 runs sql/schema/ itself, so this
    checks Alembic's path (its transaction, its version table) against a plain
    load; from the release on it compares the chain of deltas with the files."""
    migrated = empty_database("catalog_migrated")
    from_files = empty_database("catalog_from_files")
    migrate.upgrade(migrated)
    load_schema_files(from_files)
    assert dump_schema(pg_server, migrated) == dump_schema(pg_server, from_files)


def test_migrations_go_down_and_up_again(pg_server, empty_database):
    url = empty_database("down_and_up")
    migrate.upgrade(url)
    first = dump_schema(pg_server, url)
    assert "CREATE TABLE sluice.jobs" in first

    migrate.downgrade(url, "base")
    with psycopg.connect(url) as conn:
        left = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'sluice'::regnamespace "
            "UNION ALL SELECT p.proname FROM pg_proc p "
            "WHERE p.pronamespace = 'sluice'::regnamespace "
            "UNION ALL SELECT t.typname FROM pg_type t "
            "WHERE t.typnamespace = 'sluice'::regnamespace AND t.typtype IN ('e', 'd')"
        ).fetchall()
        assert sorted(name for (name,) in left) == ["alembic_version", "alembic_version_pkc"]
        assert conn.execute("SELECT count(*) FROM sluice.alembic_version").fetchone() == (0,)

    migrate.upgrade(url)
    assert dump_schema(pg_server, url) == first


def test_every_revision_runs_versioned_sql_files():
    """Revisions only execute files from sql/migrations/, and every file is used."""
    versions = migrate.MIGRATIONS_DIR / "versions"
    referenced = set()
    for revision in versions.glob("*.py"):
        text = revision.read_text()
        referenced.update(part.split('"')[0] for part in text.split('sqlfile.execute("')[1:])
    files = {p.name for p in (SQL_DIR / "migrations").glob("*.sql")}
    assert referenced == files
