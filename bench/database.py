"""The database a bench run uses: an embedded cluster it starts, or SLUICE_DATABASE_URL.

The embedded cluster is `sluice up`'s (sluice.core.embedded) with PostgreSQL's default
durability: fsync, synchronous_commit and full_page_writes stay on. Two kinds of
server settings (`--server-settings`):

- `default`: initdb's defaults, what most users first run Sluice on
  (`shared_buffers=128MB`, `max_wal_size=1GB`, `checkpoint_timeout=5min`), so
  checkpoints fall during a run and every page a run dirties costs a full-page
  image in the WAL after each one;
- `tuned`: memory and checkpoint spacing raised, never durability, so a run
  measures the queue and not the checkpointer.

Both keep commit timestamps (the DAG scenario reads when a parent committed;
the commit record carries the time either way, so this adds no WAL per
transaction). Every setting that differs from PostgreSQL's default is read back
from pg_settings into the record, whichever database is used.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from sluice.core import migrate
from sluice.core.db import normalize_url
from sluice.core.embedded import EmbeddedPostgres

# What every embedded run sets: instruments, not tuning.
COMMON_SETTINGS = {
    # pg_xact_commit_timestamp(): when a DAG parent's completion committed.
    "track_commit_timestamp": "on",
    "log_min_messages": "warning",
}
# `--server-settings`: the server's settings by name. `tuned` raises memory and
# checkpoint spacing only, never durability.
SERVER_SETTINGS = {
    "default": COMMON_SETTINGS,
    "tuned": {
        **COMMON_SETTINGS,
        "shared_buffers": "2GB",
        "work_mem": "16MB",
        "maintenance_work_mem": "512MB",
        "max_wal_size": "16GB",
        "min_wal_size": "2GB",
        "checkpoint_timeout": "30min",
        "max_connections": "200",
    },
}
# `--profile`: per-statement server time (pg_stat_statements) in the record.
PROFILE_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
}

# Everything Sluice keeps, emptied between scenarios.
SLUICE_TABLES = (
    "sluice.job_attempt_log",
    "sluice.dead_letters",
    "sluice.job_edges",
    "sluice.jobs",
    "sluice.dag_runs",
    "sluice.dags",
    "sluice.schedules",
    "sluice.workers",
    "sluice.leaders",
    "sluice.queues",
)


class BenchDatabaseError(RuntimeError):
    """The database cannot be used for a bench run; the message says why."""


@contextlib.contextmanager
def open_database(
    url: str | None,
    *,
    data_dir: Path | None = None,
    profile: bool = False,
    reset: bool = False,
    settings: str = "default",
) -> Iterator[tuple[str, bool]]:
    """Yield (url, embedded): a migrated database to run scenarios against.

    With `url`, that database is migrated and must hold no jobs unless `reset`
    (scenarios empty the Sluice tables). Without, a fresh embedded cluster with
    the server settings named `settings` (a key of SERVER_SETTINGS) is started
    in `data_dir` (default: a temporary directory, removed afterwards; a cluster
    already there is reused, the settings given on its command line).
    """
    if url:
        url = normalize_url(url)
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            busy = conn.execute("SELECT EXISTS (SELECT 1 FROM sluice.jobs)").fetchone()[0]
        if busy and not reset:
            raise BenchDatabaseError(
                "sluice.jobs is not empty in the database of SLUICE_DATABASE_URL; the bench "
                "empties the Sluice tables between scenarios. Pass --reset to allow it."
            )
        if profile:
            _create_profile_extension(url)
        yield url, False
        return
    temporary = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="sluice-bench-")) if data_dir is None else data_dir
    server = EmbeddedPostgres(
        directory, settings={**SERVER_SETTINGS[settings], **(PROFILE_SETTINGS if profile else {})}
    )
    server.start()
    try:
        url = server.url()
        migrate.upgrade(url)
        if profile:
            _create_profile_extension(url)
        yield url, True
    finally:
        server.stop()
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def _create_profile_extension(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        except psycopg.Error as exc:
            raise BenchDatabaseError(
                f"--profile needs pg_stat_statements in shared_preload_libraries: {exc}"
            ) from None


async def reset(conn: psycopg.AsyncConnection) -> None:
    """Empty every Sluice table and flush dirty pages, so each scenario starts alike."""
    await conn.execute(f"TRUNCATE {', '.join(SLUICE_TABLES)} RESTART IDENTITY CASCADE")
    await conn.execute("CHECKPOINT")


async def server_settings(conn: psycopg.AsyncConnection) -> dict[str, str]:
    """Every server setting that is not PostgreSQL's built-in default."""
    cur = await conn.execute(
        "SELECT name, current_setting(name) FROM pg_settings"
        " WHERE source NOT IN ('default', 'override', 'client', 'session')"
        " ORDER BY name"
    )
    return dict(await cur.fetchall())


async def server_version(conn: psycopg.AsyncConnection) -> str:
    cur = await conn.execute("SHOW server_version")
    return (await cur.fetchone())[0]


async def scalar(conn: psycopg.AsyncConnection, sql: str, params: Any = None) -> Any:
    """The first column of the first row of `sql`."""
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return None if row is None else row[0]


async def relation_sizes(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """Bytes on disk of sluice.jobs, its attempt log and each of their indexes.
    Where sluice.jobs is partitioned, `jobs` is all its partitions together (at
    every level), and `jobs_live` (the partition claims read) and its indexes
    are listed too."""
    cur = await conn.execute(
        """SELECT c.relname,
                  CASE WHEN c.relkind IN ('p', 'I')
                       THEN (SELECT sum(pg_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t)
                       ELSE pg_relation_size(c.oid) END::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'sluice'
              AND (c.relname IN ('jobs', 'jobs_live', 'job_attempt_log')
                   OR c.oid IN (SELECT indexrelid FROM pg_index
                                 WHERE indrelid IN ('sluice.jobs'::regclass,
                                                    'sluice.job_attempt_log'::regclass)
                                    OR indrelid = to_regclass('sluice.jobs_live')))
            ORDER BY c.relname"""
    )
    return dict(await cur.fetchall())
