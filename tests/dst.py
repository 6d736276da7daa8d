"""The daylight saving rule of cron schedules (docs/worker.md, "cron";
sluice.core.occurrences) as data, shared by the tests of the rule, of the worker
that fires by it and of the API that lists it."""

from __future__ import annotations

BERLIN = "Europe/Berlin"
NIGHTLY = "30 2 * * *"

# What `30 2 * * *` in Europe/Berlin fires on the two transition nights of 2026.
BERLIN_NIGHTS = {
    # 02:30 does not exist: fired once, at the first instant after the gap.
    "2026-03-29": ["2026-03-29T03:00:00+02:00"],
    # 02:30 happens twice (CEST, then CET): fired once, at the first.
    "2026-10-25": ["2026-10-25T02:30:00+02:00"],
}
