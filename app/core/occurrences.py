"""When a cron schedule fires: the one rule the worker's scheduler fires by
(sluice.worker.cron) and the API lists by (GET /api/v1/schedules/{id}/upcoming).

An expression (croniter's 5, 6 or 7 fields) is read in the schedule's IANA time
zone and follows its wall clock (docs/worker.md, "cron"):

- spring forward: a time the clock skips (02:30 on 2026-03-29 in
  Europe/Berlin) occurs once, at the first instant after the gap (03:00 CEST),
  as in Vixie cron and croniter;
- fall back: a time the clock shows twice (02:30 on 2026-10-25) occurs once,
  at its first instant (02:30 CEST); the repeated hour has no occurrence.

An expression with no next date (`0 0 31 2 *`, a one-shot `0 0 1 1 * 0 2027`
once past, or past the year 9999) simply has no more occurrences: the
occurrences end, they never raise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

_READ_AT = dt.datetime(2000, 1, 1)


class UnusableSchedule(ValueError):
    """A cron expression or time zone no occurrence can be computed from;
    `field` is `cron` or `timezone`, `reason` says which, `detail` why."""

    def __init__(self, field: str, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.detail = detail


def _zone(timezone: str) -> ZoneInfo:
    """The IANA time zone named `timezone`, or UnusableSchedule."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        reason = f"unknown time zone {timezone!r}"
        raise UnusableSchedule("timezone", reason, "use an IANA name: Europe/Paris") from None


def occurrences(
    expression: str, timezone: str, start: dt.datetime, *, inclusive: bool = False
) -> Iterator[dt.datetime]:
    """The times `expression` fires after `start` (an aware datetime), in order,
    once per wall-clock time of `timezone`, as aware datetimes in that zone;
    `inclusive` yields `start` itself first (a known occurrence: the
    scheduler's next one). The iterator ends where the expression has no next
    date. UnusableSchedule, at once rather than while iterating, for an
    expression or a time zone that cannot be read."""
    zone = _zone(timezone)
    try:
        # Read at a fixed time first, so what the expression says never depends on `start`.
        times = croniter(expression, _READ_AT.replace(tzinfo=zone))
    # croniter's CroniterBadCronError is a ValueError.
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        reason = f"invalid cron expression {expression!r}"
        raise UnusableSchedule("cron", reason, f"croniter: {exc}") from None
    try:
        local = start.astimezone(zone)
        times.set_current(local, force=True)
    # A `start` the zone's clock cannot show (at the edges of datetime's range):
    # no occurrence to tell.
    except OverflowError:
        return iter(())
    return _wall_clock(times, local if inclusive else None)


def _wall_clock(times: croniter, first: dt.datetime | None) -> Iterator[dt.datetime]:
    """croniter's times (after `first`, when given), once per wall-clock time:
    the second pass through a fall-back hour is left out, and so is an instant
    given twice (croniter moves every time a spring-forward gap skips to the
    instant after it)."""
    last = None
    at = first
    while True:
        if at is None:
            try:
                at = times.get_next(dt.datetime)
            # CroniterBadDateError: no such date, ever again; OverflowError: a
            # next date past datetime's year 9999. Either way there is none.
            except (ValueError, OverflowError):
                return
        repeated = at.fold == 1 and at.replace(fold=0).utcoffset() != at.utcoffset()
        if not repeated and at != last:
            yield at
            last = at
        at = None


def upcoming(expression: str, timezone: str, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next `count` occurrences after `after`: fewer, or none, when the
    expression has no more. UnusableSchedule as `occurrences`."""
    return list(islice(occurrences(expression, timezone, after), count))
