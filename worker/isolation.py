"""Maintenance passes that survive any single row.

Each service runs its pass as set-based statements. When one fails because
of the rows it touched (not a lost connection, which is simply retried), the
service runs the pass again one row at a time (sql/schema/46_maintenance.sql):
the rows that can be processed are, and the one that cannot is set aside (a job
failed into the dead-letter queue with the error, or a finished row left in
place). Each failed batch and each row set aside is logged and counted in
`sluice_maintenance_errors_total`; a row that stays bad is reported once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import psycopg

from sluice.core.logging import error_line
from sluice.core.metrics import MAINTENANCE_ERRORS
from sluice.core.protocol import IsolatedJob, IsolatedPrune
from sluice.worker.retrying import TRANSIENT

log = logging.getLogger("sluice.maintenance")

# Rows reported as set aside are remembered so a row that stays bad is logged once;
# past this many the memory is cleared (and they are reported again).
REMEMBER = 10000


def refused(exc: BaseException) -> bool:
    """The database refused the statement (an error a row caused), rather than
    the connection failing or the server being read-only (retried as it is)."""
    return isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, TRANSIENT)


class SetAside:
    """What one service reports about batches that failed and rows it set aside."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._errors = MAINTENANCE_ERRORS.labels(service)
        self._reported: set[Any] = set()

    def count(self) -> None:
        """One more error (reported by the caller)."""
        self._errors.inc()

    def batch_failed(self, exc: BaseException) -> None:
        self._errors.inc()
        log.error(
            "%s: a batch failed (%s); processing its rows one at a time",
            self.service,
            error_line(exc),
        )

    def jobs(self, rows: Iterable[IsolatedJob], verb: str) -> int:
        """Report the jobs of an isolated pass that failed; returns how many were
        processed."""
        done = 0
        for row in rows:
            if row.error is None:
                done += 1
            elif row.quarantined:
                fate = "failed without retry: it waits in the dead-letter queue"
                self.report("job", row.id, verb, row.error, fate)
            else:
                fate = "it could not be failed either, and stays as it is until its row is fixed"
                self.report("job", row.id, verb, row.error, fate)
        return done

    def pruned(self, rows: Iterable[IsolatedPrune], verb: str) -> int:
        """Report the finished jobs or runs an isolated prune left in place; returns
        how many were deleted."""
        done = 0
        for row in rows:
            if row.error is None:
                done += 1
            else:
                self.report(row.kind, row.id, verb, row.error, "left in place")
        return done

    def report(self, kind: str, key: Any, verb: str, error: str, fate: str) -> None:
        """`cron: could not fire schedule 7 (error); disabled`, once per row."""
        if (kind, key) in self._reported:
            return
        if len(self._reported) >= REMEMBER:
            self._reported.clear()
        self._reported.add((kind, key))
        self._errors.inc()
        log.error("%s: could not %s %s %s (%s); %s", self.service, verb, kind, key, error, fate)
