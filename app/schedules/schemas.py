"""Request and response bodies of the schedules API (a schedule is
sluice.core.engine.Schedule)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from sluice.core.jobs import SCHEDULE_DEFAULTS, SCHEDULE_NAME
from sluice.core.jobs import Misfire as MisfireKind
from sluice.http.shapes import DagName, JobTemplate, Params

ScheduleName = Annotated[str, Meta(pattern=SCHEDULE_NAME.pattern, examples=["nightly-export"])]
Cron = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]+$",
        examples=["0 3 * * *"],
        description="A cron expression (croniter).",
    ),
]
TimeZone = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00]+$",
        examples=["Europe/Paris"],
        description="An IANA time zone.",
    ),
]
Misfire = Annotated[
    MisfireKind,
    Meta(description="After downtime: run the latest missed occurrence, all of them, or none."),
]


class ScheduleCreate(Struct, forbid_unknown_fields=True, kw_only=True):
    """Start a job (`job`) or a run of a stored DAG (`dag`) at each cron occurrence."""

    name: ScheduleName
    cron: Cron
    timezone: TimeZone = SCHEDULE_DEFAULTS.timezone
    job: JobTemplate | None = None
    dag: DagName | None = None
    dag_params: Params = {}
    misfire: Misfire = SCHEDULE_DEFAULTS.misfire
    enabled: bool = SCHEDULE_DEFAULTS.enabled


class ScheduleUpdate(Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields to change; the others keep their values."""

    name: ScheduleName | UnsetType = UNSET
    cron: Cron | UnsetType = UNSET
    timezone: TimeZone | UnsetType = UNSET
    job: JobTemplate | UnsetType | None = UNSET
    dag: DagName | UnsetType | None = UNSET
    dag_params: Params | UnsetType = UNSET
    misfire: Misfire | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class Upcoming(Struct, kw_only=True):
    """When a schedule fires next, from now (or `after`), by its cron expression on the
    wall clock of its time zone; `times` is short, or empty, when it has no more."""

    schedule_id: int
    enabled: bool
    times: list[datetime]
