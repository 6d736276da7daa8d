"""Fires cron schedules (sluice.schedules) under the maintenance leader.

Occurrences are sluice.core.occurrences': croniter in the schedule's time zone,
by its wall clock (a time the clock skips fires once, after the gap; a time it
shows twice fires once, at the first), the rule the API lists upcoming times
by too. The times the scheduler sees, and "now", come from the database clock
(or from the caller, to drive the clock in tests). An occurrence more than
`grace` old when seen was missed (the scheduler was down); the schedule's
`misfire` decides what runs then:

- `latest` (default): the newest missed occurrence runs once;
- `all`: every missed occurrence runs (at most `MAX_OCCURRENCES` per pass);
- `skip`: none runs; the schedule resumes with the next one.

Each occurrence is enqueued with the key `schedule:<id>:<wall-clock time>`
(`...T02:30:00[Europe/Berlin]`, or `...T02:30:00Z` in UTC), so it runs once
however many schedulers fire it (see sql/schema/44_schedules.sql).

A schedule that cannot fire (an invalid expression or time zone, no next
occurrence, such as `0 0 31 2 *`, or a one-shot date that has passed, a row
the scheduler cannot read or update) is disabled with the reason in its
`last_error`; it never stops the other schedules.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg_pool import AsyncConnectionPool

from sluice.core import protocol
from sluice.core.logging import error_line
from sluice.core.occurrences import UnusableSchedule, occurrences
from sluice.core.protocol import DueSchedule
from sluice.worker.isolation import SetAside, refused
from sluice.worker.retrying import pooled

log = logging.getLogger("sluice.maintenance")

MAX_OCCURRENCES = 1000
BATCH = 100
MIN_SLEEP = 0.005


@dataclass(frozen=True)
class Firing:
    """What one pass does for a schedule: fire `occurrences`, then wait for
    `next_fire_at`; None means the schedule cannot fire again and is disabled,
    `error` saying why."""

    occurrences: list[dt.datetime]
    next_fire_at: dt.datetime | None
    error: str | None = None


def plan(
    cron: str,
    timezone: str,
    misfire: str,
    *,
    next_fire_at: dt.datetime | None,
    base: dt.datetime,
    now: dt.datetime,
    grace: float,
) -> Firing:
    """The occurrences to fire now and the next one to wait for.

    `next_fire_at` is the first occurrence not yet handled; when unknown (a new or
    edited schedule), occurrences are counted from just after `base`.
    """
    start = next_fire_at if next_fire_at is not None else base
    try:
        upcoming = occurrences(cron, timezone, start, inclusive=next_fire_at is not None)
    except UnusableSchedule as exc:
        return Firing([], None, exc.reason)
    due: list[dt.datetime] = []
    at = next(upcoming, None)  # the next occurrence; None: there is none, ever again
    while at is not None and at <= now and len(due) < MAX_OCCURRENCES:
        due.append(at.astimezone(dt.UTC))
        at = next(upcoming, None)
    error = None
    if at is None:
        after = (due[-1] if due else start).astimezone(ZoneInfo(timezone))
        error = f"no occurrence of {cron!r} after {after.isoformat()}"
    cutoff = now - dt.timedelta(seconds=grace)
    on_time = [t for t in due if t >= cutoff]
    missed = [t for t in due if t < cutoff]
    if misfire == "all":
        fire = due
    elif misfire == "skip":
        fire = on_time
    else:  # latest
        fire = on_time or missed[-1:]
    return Firing(fire, None if at is None else at.astimezone(dt.UTC), error)


class CronScheduler:
    """One pass fires every due schedule; the next is timed by the next due one."""

    def __init__(self, pool: AsyncConnectionPool, *, max_sleep: float, grace: float) -> None:
        self._pool = pool
        self._max_sleep = max_sleep
        self._grace = grace
        self._aside = SetAside("cron")

    async def tick(self, now: dt.datetime | None = None) -> float:
        """Fire what is due at `now` (default: the database's clock); returns how
        long to sleep before the next pass."""
        async with pooled(self._pool) as conn:
            # Read tolerantly: one schedule holding a time Python cannot
            # represent is disabled, not the end of cron for every schedule.
            due = await protocol.schedule_due(conn, limit=BATCH, now=now)
            for schedule in due:
                await self._fire(conn, schedule)
            if len(due) >= BATCH:
                return 0.0
            wait = await protocol.schedule_next_due_in(conn, now=now)
        if wait is None:
            return self._max_sleep
        return min(self._max_sleep, max(MIN_SLEEP, wait))

    async def _fire(self, conn: Any, row: DueSchedule) -> None:
        if row.problem is not None:
            await self._disable(
                conn, row, f"the scheduler cannot read this schedule: {row.problem}"
            )
            return
        base = max(row.last_fired_at or row.updated_at, row.updated_at)
        try:
            firing = plan(
                row.cron,
                row.timezone,
                row.misfire,
                next_fire_at=row.next_fire_at,
                base=base,
                now=row.now,
                grace=self._grace,
            )
        except Exception as exc:  # an expression croniter chokes on in a way not foreseen
            firing = Firing([], None, f"cannot compute the next occurrence: {exc!r}")
        try:
            fired = await protocol.schedule_fire(
                conn,
                id=row.id,
                seen=row.updated_at,
                occurrences=firing.occurrences,
                next_fire_at=firing.next_fire_at,
                error=firing.error,
            )
        except psycopg.DatabaseError as exc:
            if not refused(exc):
                raise
            await self._disable(conn, row, f"the scheduler could not fire it: {error_line(exc)}")
            return
        if fired:
            log.info("schedule %s (%s) fired %d occurrence(s)", row.id, row.name, fired)
        if firing.next_fire_at is None and fired is not None:
            log.warning(
                "schedule %s (%s) disabled: %s",
                row.id,
                row.name,
                firing.error or "no next occurrence",
            )
        elif fired == 0 and firing.occurrences:
            log.warning(
                "schedule %s (%s) could not start its occurrence(s); see its "
                "last_error in sluice.schedules",
                row.id,
                row.name,
            )

    async def _disable(self, conn: Any, row: DueSchedule, reason: str) -> None:
        """Take a schedule that cannot fire out of the rotation, saying why."""
        try:
            await protocol.schedule_disable(conn, id=row.id, error=reason)
        except psycopg.DatabaseError as exc:
            if not refused(exc):
                raise
            # Not even that: it is due again at every pass, and skipped each time.
            fate = f"nor disable it ({error_line(exc)}): it is skipped until its row is fixed"
            self._aside.report("schedule", row.id, "fire", reason, fate)
            return
        self._aside.count()
        log.error("schedule %s (%s) disabled: %s", row.id, row.name, reason)
