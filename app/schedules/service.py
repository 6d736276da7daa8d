"""The schedules area's rules: a schedule's cron expression must be one croniter reads
in its IANA time zone, and it starts either a job (checked like any job) or a run
of one of the tenant's DAGs. The worker's scheduler fires them; this only manages them."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter
from croniter.croniter import CroniterError
from psycopg import AsyncConnection

from sluice.auth import Principal, require_shell_permission
from sluice.core import engine
from sluice.core.engine import Schedule, ScheduleColumns
from sluice.core.problems import Problems
from sluice.core.tasks import TaskCatalog
from sluice.http.errors import Refusal, found, invalid
from sluice.http.redact import redact
from sluice.http.shapes import template_problems
from sluice.schedules.schemas import ScheduleCreate, ScheduleUpdate, Upcoming


def cron_problem(expression: str, timezone: str) -> Problems:
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
    conn: AsyncConnection, schedule: ScheduleCreate, principal: Principal, catalog: TaskCatalog
) -> None:
    problems: Problems = cron_problem(schedule.cron, schedule.timezone)
    if (schedule.job is None) == (schedule.dag is None):
        problems.append(("job", "give either job or dag (the DAG to run), not both"))
    if schedule.job is not None:
        require_shell_permission([schedule.job.task], principal)
        problems += template_problems(schedule.job, catalog, "job")
    if (
        schedule.dag is not None
        and await engine.dag_get(conn, tenant=principal.tenant, name=schedule.dag, version=None)
        is None
    ):
        problems.append(("dag", f"no DAG named {schedule.dag!r}"))
    if problems:
        raise invalid(problems)


def _columns(schedule: ScheduleCreate) -> ScheduleColumns:
    # The job is stored as the arguments of sluice.enqueue (durations in seconds).
    return ScheduleColumns(
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        job=msgspec.to_builtins(schedule.job) if schedule.job else None,
        dag_name=schedule.dag,
        dag_params=schedule.dag_params,
        misfire=schedule.misfire,
        enabled=schedule.enabled,
    )


def _shown(schedule: Schedule) -> Schedule:
    """The schedule as the API shows it: secrets in its job's payload masked."""
    return msgspec.structs.replace(schedule, job=redact(schedule.job))


async def _row(conn: AsyncConnection, principal: Principal, schedule_id: int) -> Schedule:
    row = await engine.schedule_get(conn, id=schedule_id, tenant=principal.scope)
    return found(row, f"schedule {schedule_id}")


async def create(
    conn: AsyncConnection, principal: Principal, data: ScheduleCreate, catalog: TaskCatalog
) -> Schedule:
    await _check(conn, data, principal, catalog)
    row = await engine.schedule_create(conn, tenant=principal.tenant, columns=_columns(data))
    return _shown(row)


async def list_schedules(
    conn: AsyncConnection, principal: Principal, after_id: int | None, limit: int
) -> list[Schedule]:
    rows = await engine.schedule_list(conn, tenant=principal.scope, after_id=after_id, limit=limit)
    return [_shown(row) for row in rows]


async def get_schedule(conn: AsyncConnection, principal: Principal, schedule_id: int) -> Schedule:
    return _shown(await _row(conn, principal, schedule_id))


async def upcoming(
    conn: AsyncConnection, principal: Principal, schedule_id: int, count: int
) -> Upcoming:
    """The next `count` occurrences from now; 409 for a cron expression stored by
    plain SQL that croniter cannot read."""
    row = await _row(conn, principal, schedule_id)
    if problems := cron_problem(row.cron, row.timezone):
        raise Refusal(409, f"schedule {schedule_id}: {problems[0][1]}")
    times = occurrences(row.cron, row.timezone, count, datetime.now(UTC))
    return Upcoming(schedule_id=schedule_id, enabled=row.enabled, times=times)


async def update(
    conn: AsyncConnection,
    principal: Principal,
    schedule_id: int,
    data: ScheduleUpdate,
    catalog: TaskCatalog,
) -> Schedule:
    """Change some fields; the result is validated as a whole."""
    row = await _row(conn, principal, schedule_id)
    current = {
        "name": row.name,
        "cron": row.cron,
        "timezone": row.timezone,
        "job": row.job,
        "dag": row.dag,
        "dag_params": row.dag_params,
        "misfire": row.misfire,
        "enabled": row.enabled,
    }
    changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
    if "job" in changes and changes["job"] is not None:
        changes["job"] = msgspec.to_builtins(changes["job"])
    try:
        merged = msgspec.convert({**current, **changes}, ScheduleCreate)
    except msgspec.ValidationError as exc:
        raise invalid([("body", str(exc))]) from None
    await _check(conn, merged, principal, catalog)
    updated = await engine.schedule_update(
        conn, id=schedule_id, tenant=principal.scope, columns=_columns(merged)
    )
    return _shown(found(updated, f"schedule {schedule_id}"))


async def delete(conn: AsyncConnection, principal: Principal, schedule_id: int) -> None:
    if not await engine.schedule_delete(conn, id=schedule_id, tenant=principal.scope):
        found(None, f"schedule {schedule_id}")
