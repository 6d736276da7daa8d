"""/api/v1/schedules: cron schedules that start a job or a DAG run (the worker's
scheduler fires them; this only manages them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Router, delete, get, patch, post
from litestar.params import QueryParameter

from sluice.auth import OPERATOR, VIEWER
from sluice.core.engine import Schedule
from sluice.http.deps import Caller, Catalog, Conn, ReadConn
from sluice.http.errors import error_responses
from sluice.http.openapi import example_body
from sluice.http.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.http.shapes import IdPath
from sluice.schedules import service
from sluice.schedules.schemas import ScheduleCreate, ScheduleUpdate, Upcoming

NIGHTLY = {
    "name": "nightly-export",
    "cron": "0 3 * * *",
    "timezone": "Europe/Paris",
    "dag": "etl",
    "dag_params": {"day": "yesterday"},
}
HOURLY_JOB = {
    "name": "hourly-ping",
    "cron": "0 * * * *",
    "job": {"task": "http", "payload": {"url": "https://example.com/ping"}},
}


class SchedulesController(Controller):
    path = "/schedules"
    tags = ["schedules"]

    @post(
        "/",
        operation_id="schedule_create",
        summary="Create a schedule",
        guards=OPERATOR,
        responses=error_responses(403, 409),
    )
    async def create(
        self,
        data: Annotated[
            ScheduleCreate, example_body("a nightly DAG run", NIGHTLY, hourly_job=HOURLY_JOB)
        ],
        conn: Conn,
        principal: Caller,
        catalog: Catalog,
    ) -> Schedule:
        """Validate the cron expression (croniter) and time zone (IANA), then store the
        schedule in the caller's tenant. 409 when the name is taken."""
        return await service.create(conn, principal, data, catalog)

    @get(
        "/",
        operation_id="schedule_list",
        summary="List schedules",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_schedules(
        self, read_conn: ReadConn, principal: Caller, limit: Limit = 100, cursor: Cursor = None
    ) -> Page[Schedule]:
        """The tenant's schedules, oldest first."""
        schedules = await service.list_schedules(
            read_conn, principal, decode_cursor(cursor), limit + 1
        )
        return page(schedules, limit)

    @get(
        "/{schedule_id:int}",
        operation_id="schedule_get",
        summary="Get a schedule",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def show(self, schedule_id: IdPath, conn: Conn, principal: Caller) -> Schedule:
        """One schedule, with its next and last occurrence."""
        return await service.get_schedule(conn, principal, schedule_id)

    @get(
        "/{schedule_id:int}/upcoming",
        operation_id="schedule_upcoming",
        summary="When a schedule fires next",
        guards=VIEWER,
        responses=error_responses(404, 409),
    )
    async def upcoming(
        self,
        schedule_id: IdPath,
        conn: Conn,
        principal: Caller,
        count: Annotated[int, QueryParameter(ge=1, le=100, description="How many times.")] = 5,
        after: Annotated[
            datetime | None,
            QueryParameter(description="From this instant instead of now (UTC without offset)."),
        ] = None,
    ) -> Upcoming:
        """The next `count` occurrences after now (or `after`), by the rule the scheduler
        fires by: the cron expression on the wall clock of the schedule's time zone, a
        time shown twice when the clock falls back once (also while it is disabled;
        `next_fire_at` is the one the scheduler will fire). Fewer, or none, when the
        expression has no more (a one-shot date that has passed). 409 for a cron
        expression or time zone stored by plain SQL that cannot be read."""
        return await service.upcoming(conn, principal, schedule_id, count, after)

    @patch(
        "/{schedule_id:int}",
        operation_id="schedule_update",
        summary="Update a schedule",
        guards=OPERATOR,
        responses=error_responses(403, 404, 409),
    )
    async def update(
        self,
        schedule_id: IdPath,
        data: Annotated[
            ScheduleUpdate,
            example_body("pause it", {"enabled": False}, move_it={"cron": "30 4 * * *"}),
        ],
        conn: Conn,
        principal: Caller,
        catalog: Catalog,
    ) -> Schedule:
        """Change some fields; the result is validated as a whole."""
        return await service.update(conn, principal, schedule_id, data, catalog)

    @delete(
        "/{schedule_id:int}",
        operation_id="schedule_delete",
        summary="Delete a schedule",
        guards=OPERATOR,
        responses=error_responses(403, 404),
    )
    async def remove(self, schedule_id: IdPath, conn: Conn, principal: Caller) -> None:
        """Stop and forget the schedule; what it already started is untouched."""
        await service.delete(conn, principal, schedule_id)


router = Router(path="/", route_handlers=[SchedulesController])
