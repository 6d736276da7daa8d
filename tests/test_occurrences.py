"""sluice.core.occurrences: when a cron schedule fires, the one rule of the
worker's scheduler and of the API's list of upcoming times."""

from __future__ import annotations

import datetime as dt
from itertools import islice

import pytest

from sluice.core.occurrences import UnusableSchedule, occurrences, upcoming
from tests.dst import BERLIN, BERLIN_NIGHTS, NIGHTLY


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.mark.parametrize("day", sorted(BERLIN_NIGHTS))
def test_a_daylight_saving_night_has_each_wall_clock_time_once(day):
    evening = at(f"{day}T00:00:00+00:00") - dt.timedelta(hours=6)
    nights = upcoming(NIGHTLY, BERLIN, evening, 2)
    # (In UTC: Python finds an ambiguous local time unequal to any other zone's.)
    assert [t.astimezone(dt.UTC) for t in nights[:1]] == [at(t) for t in BERLIN_NIGHTS[day]]
    # ...and the next one is the next night's 02:30, not the repeated hour.
    next_day = dt.date.fromisoformat(day) + dt.timedelta(days=1)
    assert (nights[1].date(), nights[1].strftime("%H:%M")) == (next_day, "02:30")
    assert all(t.tzinfo is not None and str(t.tzinfo) == BERLIN for t in nights)


def test_an_expression_with_no_next_date_ends_its_occurrences():
    one_shot = "0 10 1 1 * 0 2026"
    assert upcoming(one_shot, "UTC", at("2025-12-01T00:00:00+00:00"), 5) == [
        at("2026-01-01T10:00:00+00:00")
    ]
    assert upcoming(one_shot, "UTC", at("2026-01-01T10:00:00+00:00"), 5) == []
    assert upcoming("0 0 31 2 *", "Europe/Paris", at("2026-01-01T00:00:00+00:00"), 5) == []
    # Past datetime's year 9999: none either; nor from a start no clock can show.
    assert len(upcoming("* * * * *", "UTC", at("9999-12-31T23:58:00+00:00"), 5)) == 1
    assert upcoming("* * * * *", "UTC", at("9999-12-31T23:59:59-14:00"), 5) == []
    assert upcoming("* * * * *", "UTC", at("0001-01-01T00:00:00+14:00"), 5) == []


def test_inclusive_starts_with_the_known_occurrence():
    start = at("2026-01-01T10:00:00+00:00")
    times = occurrences("0 * * * *", "UTC", start, inclusive=True)
    assert list(islice(times, 2)) == [start, start + dt.timedelta(hours=1)]


@pytest.mark.parametrize(
    ("cron", "zone", "field"),
    [
        ("61 * * * *", "UTC", "cron"),
        ("every tuesday", "UTC", "cron"),
        ("* * * * *", "Mars/Olympus", "timezone"),
    ],
)
def test_an_unusable_schedule_is_refused_at_once_naming_the_field(cron, zone, field):
    with pytest.raises(UnusableSchedule) as refused:
        occurrences(cron, zone, at("2026-01-01T00:00:00+00:00"))
    assert refused.value.field == field
    assert refused.value.detail
