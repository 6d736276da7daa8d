"""Retires finished jobs and runs past retention, and forgets workers.

Finished jobs live in history partitions of sluice.jobs, one per day: the
partitions of the days ahead are made here, and those wholly past retention
are dropped whole (sql/schema/47_history.sql), which deletes no row one by one
and leaves vacuum nothing to clean. The few jobs finished before the retention
but kept in a younger partition (a DAG run's jobs kept together while the run
went on) are then deleted in small batches: each batch is a short transaction,
so pruning never holds locks or a snapshot long enough to slow claims or
vacuum."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.worker.isolation import SetAside, refused
from sluice.worker.retrying import pooled

log = logging.getLogger("sluice.maintenance")

BATCH = 1000
# Breath between batches, so a large backlog of old jobs does not monopolise the database.
PAUSE = 0.05


class Pruner:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        interval: float,
        retention: float,
        worker_retention: float,
    ) -> None:
        self._pool = pool
        self._interval = interval
        self._retention = dt.timedelta(seconds=retention)
        self._worker_retention = dt.timedelta(seconds=worker_retention)
        self._aside = SetAside("pruner")

    async def tick(self) -> float:
        """Prune until nothing is left past retention; returns how long to sleep."""
        total = await self._partitions()
        while True:
            async with pooled(self._pool) as conn:
                try:
                    deleted = await protocol.job_prune(conn, retention=self._retention, limit=BATCH)
                except psycopg.DatabaseError as exc:
                    if not refused(exc):
                        raise
                    self._aside.batch_failed(exc)
                    rows = await protocol.job_prune_isolated(
                        conn, retention=self._retention, limit=BATCH
                    )
                    total += self._aside.pruned(rows, "delete")
                    # What is left waits for the next pass (the rows set aside stay first).
                    break
            total += deleted
            if deleted < BATCH:
                break
            await asyncio.sleep(PAUSE)
        async with pooled(self._pool) as conn:
            workers = await protocol.worker_prune(conn, age=self._worker_retention)
        if total or workers:
            log.info("pruned %d finished job(s)/run(s)/partition(s), %d worker(s)", total, workers)
        return self._interval

    async def _partitions(self) -> int:
        """Make the coming days' history partitions and retire the old ones,
        then count the closed ones for queue_stats; how many were retired. Each
        step waits at most 100 ms for the lock it needs for an instant (on
        sluice.jobs_live to attach a partition, on sluice.jobs to detach one, on
        a past day's partition to watch it; the functions' own lock_timeout): a
        busy moment is tried again on the next pass rather than holding the
        queue up."""
        retired = 0
        async with pooled(self._pool) as conn:
            try:
                async with conn.transaction():
                    await protocol.history_prepare(conn)
                # One partition per transaction: each holds its lock until it commits.
                while True:
                    async with conn.transaction():
                        if not await protocol.history_retire(conn, retention=self._retention):
                            break
                    retired += 1
            except psycopg.errors.LockNotAvailable as exc:
                log.info("history partitions busy, trying again next pass: %s", exc)
            try:
                # The days past, watched, then counted one per transaction (each
                # count is a scan of one day's history).
                async with conn.transaction():
                    await protocol.history_rollup_watch(conn)
                while True:
                    async with conn.transaction():
                        if not await protocol.history_rollup(conn):
                            break
            except psycopg.errors.LockNotAvailable as exc:
                log.info("history counts busy, trying again next pass: %s", exc)
        return retired
