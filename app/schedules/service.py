"""The schedules area's rules: a schedule's cron expression must be one croniter reads
in its IANA time zone, with an occurrence to come, and it starts either a job (checked
like any job) or a run of one of the tenant's DAGs. The worker's scheduler fires them;
this only manages them. When one fires is sluice.core.occurrences, for both."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from psycopg import AsyncConnection

from sluice.auth import Principal, require_shell_permission
from sluice.core import engine
from sluice.core.engine import Schedule, ScheduleColumns
from sluice.core.occurrences import UnusableSchedule, occurrences
from sluice.core.occurrences import upcoming as upcoming_times
from sluice.core.problems import Problems
from sluice.core.tasks import TaskCatalog
from sluice.http.errors import Refusal, found, invalid
from sluice.http.redact import redact
from sluice.http.shapes import template_problems
from sluice.schedules.schemas import ScheduleCreate, ScheduleUpdate, Upcoming


def cron_problem(expression: str, timezone: str, *, must_fire: bool = True) -> Problems:
    """Why a schedule's cron expression or time zone cannot be used ([] when both
    can): one croniter cannot read, or, when it `must_fire`, one that never fires
    again (a one-shot date that has passed, February 31st)."""
    now = datetime.now(UTC)
    try:
        times = occurrences(expression, timezone, now)
    except UnusableSchedule as exc:
        return [(exc.field, f"{exc.reason} ({exc.detail})")]
    if must_fire and next(times, None) is None:
        return [("cron", f"{expression!r} has no occurrence after {now.isoformat()}")]
    return []


async def _check(
    conn: AsyncConnection,
    schedule: ScheduleCreate,
    principal: Principal,
    catalog: TaskCatalog,
    must_fire: bool = True,
) -> None:
    problems: Problems = cron_problem(schedule.cron, schedule.timezone, must_fire=must_fire)
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
    conn: AsyncConnection,
    principal: Principal,
    schedule_id: int,
    count: int,
    after: datetime | None = None,
) -> Upcoming:
    """The next `count` occurrences after `after` (default: now; UTC when it names no
    offset), fewer or none when the expression has no more; 409 for a cron expression
    or time zone stored by plain SQL that cannot be read."""
    row = await _row(conn, principal, schedule_id)
    if after is None:
        after = datetime.now(UTC)
    elif after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    try:
        times = upcoming_times(row.cron, row.timezone, after, count)
    except UnusableSchedule as exc:
        raise Refusal(409, f"schedule {schedule_id}: {exc.reason} ({exc.detail})") from None
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
    # A schedule that has fired its last (a one-shot date) can still be renamed or
    # disabled; a new expression or zone, or enabling it, needs an occurrence to come.
    must_fire = "cron" in changes or "timezone" in changes or changes.get("enabled") is True
    await _check(conn, merged, principal, catalog, must_fire)
    updated = await engine.schedule_update(
        conn, id=schedule_id, tenant=principal.scope, columns=_columns(merged)
    )
    return _shown(found(updated, f"schedule {schedule_id}"))


async def delete(conn: AsyncConnection, principal: Principal, schedule_id: int) -> None:
    if not await engine.schedule_delete(conn, id=schedule_id, tenant=principal.scope):
        found(None, f"schedule {schedule_id}")
