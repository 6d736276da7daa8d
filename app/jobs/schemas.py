"""Request and response bodies of the jobs API (a job itself is sluice.core.engine.Job,
what it runs sluice.http.shapes.JobTemplate)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from sluice.core.engine import Attempt, Job, ThroughputMinute, WaitTime
from sluice.core.jobs import DELAY_SECONDS_MAX, RUN_AT_END, RUN_AT_MIN
from sluice.http.shapes import IdempotencyKey, JobId, JobTemplate


class JobSubmit(JobTemplate, forbid_unknown_fields=True, kw_only=True):
    """A job to run: the task (handler) name, its payload, and how and when to run it."""

    run_at: (
        Annotated[
            datetime,
            Meta(
                tz=True,
                description=f"Not before this time (from {RUN_AT_MIN.date()}, before "
                f"{RUN_AT_END.date()}, UTC).",
            ),
        ]
        | None
    ) = None
    delay_seconds: (
        Annotated[
            float,
            Meta(ge=0, le=DELAY_SECONDS_MAX, description="Not before this many seconds from now."),
        ]
        | None
    ) = None
    depends_on: Annotated[
        list[JobId], Meta(max_length=1000, description="Ids of jobs that must succeed first.")
    ] = []
    idempotency_key: (
        Annotated[
            IdempotencyKey,
            Meta(description="A repeat with the same key returns the first job (or the header)."),
        ]
        | None
    ) = None


class JobBatch(Struct, forbid_unknown_fields=True):
    """Many jobs submitted in one transaction: all are accepted or none."""

    jobs: Annotated[list[JobSubmit], Meta(min_length=1)]


class BatchResult(Struct):
    """The ids of a batch's jobs, in the order submitted."""

    ids: list[int]
    created: int
    existing: Annotated[int, Meta(description="Jobs whose idempotency key was already used.")]


class JobDetail(Job, kw_only=True):
    """A job with its parents, every attempt, and the last attempt's output tail."""

    depends_on: list[int]
    attempts: list[Attempt]
    output: str | None


class Throughput(Struct):
    """One entry per minute, oldest first, empty minutes included."""

    items: list[ThroughputMinute]
    next_cursor: None = None


class WaitTimes(Struct, kw_only=True):
    """Wait-time percentiles over all queues (`overall`) and per queue (`items`)."""

    minutes: int
    overall: WaitTime
    items: list[WaitTime]
    next_cursor: None = None
