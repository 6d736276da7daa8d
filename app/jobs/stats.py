"""/api/v1/jobs/throughput and /api/v1/jobs/wait-times: how many jobs finish per
minute and how long they wait for a worker (the dashboard's overview charts
them; anything else may read them too). Both are read from the jobs table at
request time, so every API process answers the same."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.params import QueryParameter
from msgspec import Meta, Struct

from sluice.auth import VIEWER
from sluice.core.queries import Q
from sluice.deps import Caller, Conn
from sluice.errors import error_responses

# Percentiles are computed over at most this many of the newest finished jobs.
WAIT_SAMPLE = 10_000

Minutes = Annotated[
    int, QueryParameter(ge=1, le=1440, description="How far back to look, in minutes.")
]
QueueFilter = Annotated[
    str | None, QueryParameter(max_length=64, description="One queue (default: all).")
]


class ThroughputMinute(Struct, kw_only=True):
    """Jobs that finished in one minute, by how they ended (`failed`: dead-lettered)."""

    minute: datetime
    succeeded: int
    failed: int
    cancelled: int


class Throughput(Struct):
    """One entry per minute, oldest first, empty minutes included."""

    items: list[ThroughputMinute]
    next_cursor: None = None


Seconds = Annotated[float, Meta(ge=0)]


class WaitTime(Struct, kw_only=True):
    """Seconds jobs waited between becoming runnable and being claimed (null: no jobs)."""

    queue: Annotated[str | None, Meta(description="Null for every queue together.")]
    jobs: int
    p50: Seconds | None
    p90: Seconds | None
    p99: Seconds | None
    max: Seconds | None


class WaitTimes(Struct, kw_only=True):
    """Wait-time percentiles over all queues (`overall`) and per queue (`items`)."""

    minutes: int
    overall: WaitTime
    items: list[WaitTime]
    next_cursor: None = None


class JobStatsController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @get(
        "/throughput",
        operation_id="job_throughput",
        summary="Jobs finished per minute",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def throughput(
        self, conn: Conn, principal: Caller, minutes: Minutes = 60, queue: QueueFilter = None
    ) -> Throughput:
        """Jobs of the caller's tenant that finished in each of the last `minutes` minutes
        (the current one included), by outcome: succeeded, failed (dead-lettered; attempts
        that were retried are not counted), cancelled."""
        rows = await Q.job_throughput(conn, tenant=principal.scope, queue=queue, minutes=minutes)
        return Throughput(items=msgspec.convert(rows, list[ThroughputMinute]))

    @get(
        "/wait-times",
        operation_id="job_wait_times",
        summary="How long jobs wait for a worker",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def wait_times(
        self, conn: Conn, principal: Caller, minutes: Minutes = 60, queue: QueueFilter = None
    ) -> WaitTimes:
        """Percentiles (50, 90, 99, max) of the seconds between a job becoming runnable
        (its run_at, or its last parent finishing) and a worker claiming it, for the
        caller's jobs that started in the last `minutes` minutes: still running, or among
        the newest 10,000 finished."""
        rows = await Q.job_wait_times(
            conn, tenant=principal.scope, queue=queue, minutes=minutes, sample=WAIT_SAMPLE
        )
        waits = msgspec.convert(rows, list[WaitTime])
        return WaitTimes(minutes=minutes, overall=waits[0], items=waits[1:])
