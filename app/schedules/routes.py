"""/api/v1/schedules: cron schedules that start a job or a DAG run (the worker's
scheduler fires them; this only manages them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter
from croniter.croniter import CroniterError
from litestar import Controller, delete, get, patch, post
from litestar.params import QueryParameter
from psycopg.types.json import Jsonb

from sluice.auth import OPERATOR, VIEWER, Principal, require_shell_permission
from sluice.core.queries import Q
from sluice.core.tasks import TaskCatalog
from sluice.deps import Caller, Catalog, Conn
from sluice.errors import ApiError, error_responses, invalid, not_found
from sluice.jobs.submit import template_problems
from sluice.openapi import example_body
from sluice.pagination import Cursor, Limit, Page, decode_cursor, page
from sluice.redact import redact
from sluice.resources import IdPath
from sluice.schedules.schemas import Schedule, ScheduleCreate, ScheduleUpdate, Upcoming

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


def cron_problem(expression: str, timezone: str) -> list[tuple[str, str]]:
    """Why the cron expression or time zone cannot be used ([] when both can)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return [("timezone", f"unknown time zone {timezone!r} (use an IANA name: Europe/Paris)")]
    try:
        croniter(expression, datetime.now(UTC).astimezone(zone)).get_next(datetime)
    except (CroniterError, ValueError, KeyError, TypeError, OverflowError) as exc:
        return [("cron", f"not a cron expression croniter accepts: {exc}")]
    return []


def occurrences(expression: str, timezone: str, count: int, after: datetime) -> list[datetime]:
    """The next `count` times a (valid) cron expression fires after `after`, in `timezone`."""
    times = croniter(expression, after.astimezone(ZoneInfo(timezone)))
    return [times.get_next(datetime) for _ in range(count)]


async def _check(
    conn: Conn, schedule: ScheduleCreate, principal: Principal, catalog: TaskCatalog
) -> None:
    found = cron_problem(schedule.cron, schedule.timezone)
    if (schedule.job is None) == (schedule.dag is None):
        found.append(("job", "give either job or dag (the DAG to run), not both"))
    if schedule.job is not None:
        require_shell_permission([schedule.job.task], principal)
        found += template_problems(schedule.job, catalog, "job")
    if (
        schedule.dag is not None
        and await Q.dag_get(conn, tenant=principal.tenant, name=schedule.dag, version=None) is None
    ):
        found.append(("dag", f"no DAG named {schedule.dag!r}"))
    if found:
        raise invalid(found)


def _columns(schedule: ScheduleCreate) -> dict[str, Any]:
    # The job is stored as the arguments of sluice.enqueue (durations in seconds).
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "job": Jsonb(msgspec.to_builtins(schedule.job)) if schedule.job else None,
        "dag_name": schedule.dag,
        "dag_params": Jsonb(schedule.dag_params),
        "misfire": schedule.misfire,
        "enabled": schedule.enabled,
    }


def _to_schedule(row: dict[str, Any]) -> Schedule:
    return msgspec.convert({**row, "dag": row["dag_name"], "job": redact(row["job"])}, Schedule)


async def _row(conn: Conn, principal: Caller, schedule_id: int) -> dict[str, Any]:
    row = await Q.schedule_get(conn, id=schedule_id, tenant=principal.scope)
    if row is None:
        raise not_found(f"schedule {schedule_id}")
    return row


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
        await _check(conn, data, principal, catalog)
        row = await Q.schedule_create(conn, tenant=principal.tenant, **_columns(data))
        return _to_schedule(row)

    @get(
        "/",
        operation_id="schedule_list",
        summary="List schedules",
        guards=VIEWER,
        responses=error_responses(),
    )
    async def list_schedules(
        self, conn: Conn, principal: Caller, limit: Limit = 100, cursor: Cursor = None
    ) -> Page[Schedule]:
        """The tenant's schedules, oldest first."""
        rows = await Q.schedule_list(
            conn, tenant=principal.scope, after_id=decode_cursor(cursor), limit=limit + 1
        )
        return page([_to_schedule(r) for r in rows], limit)

    @get(
        "/{schedule_id:int}",
        operation_id="schedule_get",
        summary="Get a schedule",
        guards=VIEWER,
        responses=error_responses(404),
    )
    async def show(self, schedule_id: IdPath, conn: Conn, principal: Caller) -> Schedule:
        """One schedule, with its next and last occurrence."""
        return _to_schedule(await _row(conn, principal, schedule_id))

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
    ) -> Upcoming:
        """The next `count` occurrences from now, computed from the cron expression in the
        schedule's time zone (also while it is disabled; `next_fire_at` is the one the
        scheduler will fire). 409 for a cron expression stored by plain SQL that croniter
        cannot read."""
        row = await _row(conn, principal, schedule_id)
        if problems := cron_problem(row["cron"], row["timezone"]):
            raise ApiError(409, f"schedule {schedule_id}: {problems[0][1]}")
        times = occurrences(row["cron"], row["timezone"], count, datetime.now(UTC))
        return Upcoming(schedule_id=schedule_id, enabled=row["enabled"], times=times)

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
        row = await _row(conn, principal, schedule_id)
        current = {
            "name": row["name"],
            "cron": row["cron"],
            "timezone": row["timezone"],
            "job": row["job"],
            "dag": row["dag_name"],
            "dag_params": row["dag_params"],
            "misfire": row["misfire"],
            "enabled": row["enabled"],
        }
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if "job" in changes and changes["job"] is not None:
            changes["job"] = msgspec.to_builtins(changes["job"])
        try:
            merged = msgspec.convert({**current, **changes}, ScheduleCreate)
        except msgspec.ValidationError as exc:
            raise invalid([("body", str(exc))]) from None
        await _check(conn, merged, principal, catalog)
        updated = await Q.schedule_update(
            conn, id=schedule_id, tenant=principal.scope, **_columns(merged)
        )
        if updated is None:
            raise not_found(f"schedule {schedule_id}")
        return _to_schedule(updated)

    @delete(
        "/{schedule_id:int}",
        operation_id="schedule_delete",
        summary="Delete a schedule",
        guards=OPERATOR,
        responses=error_responses(403, 404),
    )
    async def remove(self, schedule_id: IdPath, conn: Conn, principal: Caller) -> None:
        """Stop and forget the schedule; what it already started is untouched."""
        if not await Q.schedule_delete(conn, id=schedule_id, tenant=principal.scope):
            raise not_found(f"schedule {schedule_id}")
