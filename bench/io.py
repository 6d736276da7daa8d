"""WAL bytes and buffers written over an interval, and where the WAL went.

Every throughput figure carries, per job, the WAL the server wrote (the LSN
difference over the measured interval) and the shared buffers written to disk
(by checkpoints, the background writer and backends). Neither depends on the
machine's load the way jobs/s does: on a server with default settings, each
WAL byte and each dirtied page is paid again at the next checkpoint.

`wal_breakdown` reads the records themselves with pg_walinspect (contrib,
PostgreSQL 15+) and attributes each to the relation of its first block
reference, so a table says which table or index, and which record type, the
bytes of a job went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from bench.database import scalar

# PostgreSQL 16 has pg_stat_io (every write by every process kind; 18 counts
# bytes in write_bytes instead of op_bytes per operation); 15 splits them
# between the checkpointer's, the background writer's and the backends' counters
# in pg_stat_bgwriter (17 moved the checkpointer's to pg_stat_checkpointer).
_PER_BLOCK = (
    "::bigint / current_setting('block_size')::int FROM pg_stat_io WHERE object = 'relation'"
)
BUFFERS_WRITTEN = {
    "write_bytes": "SELECT coalesce(sum(write_bytes), 0)" + _PER_BLOCK,
    "op_bytes": "SELECT coalesce(sum(writes * op_bytes), 0)" + _PER_BLOCK,
    None: "SELECT buffers_checkpoint + buffers_clean + buffers_backend FROM pg_stat_bgwriter",
}


async def wal_lsn(conn: psycopg.AsyncConnection) -> str:
    """The current WAL insert position."""
    return str(await scalar(conn, "SELECT pg_current_wal_insert_lsn()"))


async def buffers_written(conn: psycopg.AsyncConnection) -> int:
    """Shared buffers written to disk since the statistics were reset, by anyone."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    column = await scalar(
        conn,
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('pg_catalog.pg_stat_io')"
        " AND attname IN ('write_bytes', 'op_bytes') ORDER BY attname DESC LIMIT 1",
    )
    return int(await scalar(conn, BUFFERS_WRITTEN[column]))


@dataclasses.dataclass
class IoSpan:
    """What the server wrote between `IoMeter.start` and `IoMeter.stop`."""

    start_lsn: str
    end_lsn: str
    wal_bytes: int
    buffers_written: int
    #: Set by the caller when it ran `checkpoint_buffers` after the interval.
    checkpoint_buffers: int | None = None

    def per_job(self, jobs: int) -> dict[str, float]:
        out = {
            "wal_bytes_per_job": self.wal_bytes / jobs,
            "buffers_written_per_job": self.buffers_written / jobs,
        }
        if self.checkpoint_buffers is not None:
            out["buffers_checkpointed_per_job"] = self.checkpoint_buffers / jobs
        return out


class IoMeter:
    """LSN and buffers-written counters read at the start and end of an interval."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn
        self._lsn: str | None = None
        self._written: int | None = None

    async def start(self) -> None:
        self._written = await buffers_written(self.conn)
        self._lsn = await wal_lsn(self.conn)

    async def stop(self) -> IoSpan:
        assert self._lsn is not None and self._written is not None, "start() first"
        end = await wal_lsn(self.conn)
        wal = int(await scalar(self.conn, "SELECT %s::pg_lsn - %s::pg_lsn", (end, self._lsn)))
        written = await buffers_written(self.conn)
        return IoSpan(self._lsn, end, wal, written - self._written)


async def checkpoint_buffers(conn: psycopg.AsyncConnection) -> int:
    """Run a CHECKPOINT and answer the buffers it wrote: the pages dirtied since
    the last one that were still in shared buffers, which a server pays for at
    its next checkpoint whatever its settings."""
    before = await buffers_written(conn)
    await conn.execute("CHECKPOINT")
    # The checkpointer publishes its counts just after CHECKPOINT returns.
    last = await buffers_written(conn)
    for _ in range(20):
        await asyncio.sleep(0.05)
        now = await buffers_written(conn)
        if now == last:
            break
        last = now
    return last - before


def record_figures(
    record: Any, span: IoSpan, jobs: int, what: str, *, prefix: str = "", suffix: str = ""
) -> None:
    """Add `<prefix>wal_bytes_per_job<suffix>` (and the buffer figures) to a Record."""
    labels = {
        "wal_bytes_per_job": "WAL bytes per job",
        "buffers_written_per_job": "buffers written per job during the run",
        "buffers_checkpointed_per_job": "buffers written per job by the checkpoint after it",
    }
    for key, value in span.per_job(jobs).items():
        # Figures must be positive: a run that wrote nothing records a floor.
        record.figure(f"{prefix}{key}{suffix}", max(value, 1e-4), f"{what}: {labels[key]}")


# -- pg_walinspect ---------------------------------------------------------------

BLOCK_REF = re.compile(r"rel (\d+)/(\d+)/(\d+) fork (\w+) blk (\d+)")

RECORDS = """
SELECT resource_manager, record_type, record_length, fpi_length, block_ref
  FROM pg_get_wal_records_info(%s::pg_lsn, %s::pg_lsn)
"""
FILENODES = """
SELECT pg_relation_filenode(c.oid), c.oid::regclass::text
  FROM pg_class c
 WHERE pg_relation_filenode(c.oid) IS NOT NULL
"""


@contextlib.asynccontextmanager
async def wal_inspection(conn: psycopg.AsyncConnection) -> AsyncIterator[bool]:
    """Whether pg_walinspect can read the WAL written inside the block: the
    extension (contrib) is created, and a physical replication slot reserves the
    WAL from now on, so checkpoints do not recycle the segments before they are
    read (it changes nothing in what is written). Both need a superuser (or the
    REPLICATION privilege for the slot); without them the answer is False and
    only LSN differences can be had."""
    name = f"sluice_bench_{os.getpid()}"
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        await conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
    except psycopg.Error:
        yield False
        return
    try:
        yield True
    finally:
        await conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


async def wal_breakdown(
    conn: psycopg.AsyncConnection, start_lsn: str, end_lsn: str, jobs: int
) -> list[dict[str, Any]]:
    """The WAL between two positions, per (relation, record type): records and
    bytes per job, and how many of those bytes were full-page images. A record
    counts for the relation of its first block reference; records without one
    (commits, running-xacts snapshots) under their resource manager. What the
    LSN difference holds beyond the records (alignment, page headers) is the row
    `(alignment and page headers)`."""
    # pg_walinspect reads only what is flushed; the WAL writer flushes what
    # asynchronous commits (claims) left within wal_writer_delay.
    for _ in range(100):
        if await scalar(conn, "SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (end_lsn,)):
            break
        await asyncio.sleep(0.02)
    cur = await conn.execute(FILENODES)
    names = {int(node): name for node, name in await cur.fetchall()}
    groups: dict[tuple[str, str], list[float]] = {}
    cur = await conn.execute(RECORDS, (start_lsn, end_lsn))
    total = 0
    async for rmgr, rtype, length, fpi, block_ref in cur:
        match = BLOCK_REF.search(block_ref or "")
        if match is None:
            relation = f"({rmgr.lower()})"
        else:
            node, fork = int(match.group(3)), match.group(4)
            relation = names.get(node, f"filenode {node}")
            if fork != "main":
                relation += f" ({fork})"
        # The record type without its flags ("UPDATE+INIT" is an UPDATE).
        key = (relation, f"{rmgr}/{rtype.split('+')[0]}")
        g = groups.setdefault(key, [0, 0, 0])
        g[0] += 1
        g[1] += length
        g[2] += fpi
        total += length
    span = int(await scalar(conn, "SELECT %s::pg_lsn - %s::pg_lsn", (end_lsn, start_lsn)))
    rows = [
        {
            "relation": relation,
            "record": record,
            "records_per_job": round(n / jobs, 3),
            "bytes_per_job": round(b / jobs, 1),
            "fpi_bytes_per_job": round(f / jobs, 1),
        }
        for (relation, record), (n, b, f) in groups.items()
    ]
    rows.append(
        {
            "relation": "(alignment and page headers)",
            "record": "",
            "records_per_job": 0.0,
            "bytes_per_job": round((span - total) / jobs, 1),
            "fpi_bytes_per_job": 0.0,
        }
    )
    rows.sort(key=lambda r: -r["bytes_per_job"])
    return rows


def by_relation(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Bytes per job summed per relation, largest first."""
    sums: dict[str, float] = {}
    for row in rows:
        sums[row["relation"]] = sums.get(row["relation"], 0.0) + row["bytes_per_job"]
    return dict(sorted(((k, round(v, 1)) for k, v in sums.items()), key=lambda kv: -kv[1]))


def markdown_table(rows: list[dict[str, Any]], top: int = 25) -> str:
    """The breakdown as a markdown table (the `top` largest rows, then the rest summed)."""
    lines = [
        "| relation | record | records/job | bytes/job | of which FPI |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows[:top]:
        lines.append(
            f"| {row['relation']} | {row['record']} | {row['records_per_job']:.2f} "
            f"| {row['bytes_per_job']:.1f} | {row['fpi_bytes_per_job']:.1f} |"
        )
    rest = rows[top:]
    if rest:
        lines.append(
            f"| (the rest, {len(rest)} rows) | | {sum(r['records_per_job'] for r in rest):.2f} "
            f"| {sum(r['bytes_per_job'] for r in rest):.1f} "
            f"| {sum(r['fpi_bytes_per_job'] for r in rest):.1f} |"
        )
    lines.append(f"| **total** | | | **{sum(r['bytes_per_job'] for r in rows):.1f}** | |")
    return "\n".join(lines)
