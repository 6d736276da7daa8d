"""Fires cron schedules (sluice.schedules) under the maintenance leader.

Occurrences are computed with croniter in the schedule's time zone (DST
included). The times the scheduler sees, and "now", come from the database clock.
An occurrence more than `grace` old when seen was missed (the scheduler was
down); the schedule's `misfire` decides what runs then:

- `latest` (default): the newest missed occurrence runs once;
- `all`: every missed occurrence runs (at most `MAX_OCCURRENCES` per pass);
- `skip`: none runs; the schedule resumes with the next one.

Each occurrence is enqueued with the key `schedule:<id>:<occurrence>`, so it runs
once however many schedulers fire it (see sql/schema/44_schedules.sql).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from psycopg_pool import AsyncConnectionPool

from sluice.core.queries import Q

log = logging.getLogger("sluice.maintenance")

MAX_OCCURRENCES = 1000
BATCH = 100
MIN_SLEEP = 0.005
# Where an unusable schedule waits until someone edits it (which clears next_fire_at).
NEVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Firing:
    """What one pass does for a schedule."""

    occurrences: list[dt.datetime]
    next_fire_at: dt.datetime
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
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return Firing([], NEVER, f"unknown time zone {timezone!r}")
    if not croniter.is_valid(cron):
        return Firing([], NEVER, f"invalid cron expression {cron!r}")
    if next_fire_at is None:
        it = croniter(cron, base.astimezone(zone))
        at = it.get_next(dt.datetime)
    else:
        it = croniter(cron, next_fire_at.astimezone(zone))
        at = next_fire_at
    due: list[dt.datetime] = []
    while at <= now and len(due) < MAX_OCCURRENCES:
        due.append(at.astimezone(dt.UTC))
        at = it.get_next(dt.datetime)
    cutoff = now - dt.timedelta(seconds=grace)
    on_time = [t for t in due if t >= cutoff]
    missed = [t for t in due if t < cutoff]
    if misfire == "all":
        fire = due
    elif misfire == "skip":
        fire = on_time
    else:  # latest
        fire = on_time or missed[-1:]
    return Firing(fire, at.astimezone(dt.UTC))


class CronScheduler:
    """One pass fires every due schedule; the next is timed by the next due one."""

    def __init__(self, pool: AsyncConnectionPool, *, max_sleep: float, grace: float) -> None:
        self._pool = pool
        self._max_sleep = max_sleep
        self._grace = grace

    async def tick(self) -> float:
        async with self._pool.connection() as conn:
            rows = await Q.schedule_due(conn, limit=BATCH)
            for row in rows:
                await self._fire(conn, row)
            if len(rows) >= BATCH:
                return 0.0
            wait = await Q.schedule_next_due_in(conn)
        if wait is None:
            return self._max_sleep
        return min(self._max_sleep, max(MIN_SLEEP, wait))

    async def _fire(self, conn: Any, row: dict[str, Any]) -> None:
        base = max(row["last_fired_at"] or row["updated_at"], row["updated_at"])
        firing = plan(
            row["cron"],
            row["timezone"],
            row["misfire"],
            next_fire_at=row["next_fire_at"],
            base=base,
            now=row["now"],
            grace=self._grace,
        )
        fired = await Q.schedule_fire(
            conn,
            id=row["id"],
            seen=row["updated_at"],
            occurrences=firing.occurrences,
            next_fire_at=firing.next_fire_at,
            error=firing.error,
        )
        if firing.error:
            log.warning("schedule %s (%s) cannot fire: %s", row["id"], row["name"], firing.error)
        elif fired == 0 and firing.occurrences:
            log.warning(
                "schedule %s (%s) could not start its occurrence(s); see its "
                "last_error in sluice.schedules",
                row["id"],
                row["name"],
            )
        elif fired:
            log.info("schedule %s (%s) fired %d occurrence(s)", row["id"], row["name"], fired)
