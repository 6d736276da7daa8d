"""The facts sluice.core.jobs declares for Python agree with the migrated catalog:
enum labels, column defaults, CHECK constraints and domains. And every constraint
the API maps to a request field (sluice.http.errors.CONSTRAINT_FIELDS) exists."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import psycopg
import pytest
from psycopg import errors as pg
from psycopg.types.json import Jsonb

from sluice.core import jobs
from sluice.core.jobs import (
    BACKOFF_SECONDS_MAX,
    BACKOFFS,
    DEFAULT_TENANT,
    JOB_DEFAULTS,
    JOB_STATES,
    MAX_ATTEMPTS_MAX,
    MAX_ATTEMPTS_MIN,
    MAX_JSON_DEPTH,
    MISFIRES,
    RUN_AT_END,
    RUN_AT_MIN,
    RUN_STATES,
    SCHEDULE_DEFAULTS,
    TERMINAL_STATES,
    TIMEOUT_SECONDS_MAX,
    NameRule,
)
from sluice.http.errors import CONSTRAINT_FIELDS
from tests.api.test_bounds import nested
from tests.factories import rows, scalar

# The name rules SQL enforces (a DAG node's id is kept in jobs.node unchecked).
NAME_RULES = {
    name: rule
    for name, rule in vars(jobs).items()
    if isinstance(rule, NameRule) and rule.constraint is not None
}


async def refused(db, sql: str, *params) -> str | None:
    """The constraint that refuses `sql` (None when it is accepted); nothing is kept."""
    try:
        async with db.transaction():
            await db.execute(sql, params or None)
            raise _Accepted
    except _Accepted:
        return None
    except (pg.CheckViolation, pg.IntegrityError) as exc:
        return exc.diag.constraint_name


class _Accepted(Exception):
    pass


async def test_states_are_the_enum_labels(db):
    assert await scalar(db, "SELECT enum_range(NULL::sluice.job_state)::text[]") == list(JOB_STATES)
    assert await scalar(db, "SELECT enum_range(NULL::sluice.run_state)::text[]") == list(RUN_STATES)
    terminal = await scalar(
        db,
        "SELECT array_agg(s::text ORDER BY s) FROM unnest(enum_range(NULL::sluice.job_state)) s"
        " WHERE sluice.state_is_terminal(s)",
    )
    assert terminal == list(TERMINAL_STATES)


# As the API shows them: a row stores null for the default retry policy.
SHOWN_DEFAULTS = """
    SELECT tenant, queue, priority, max_attempts, backoff, backoff_base, backoff_max, timeout
      FROM sluice.api_jobs WHERE id = %s
"""


@pytest.mark.parametrize(
    "insert",
    [
        "INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id",
        "SELECT sluice.enqueue('noop')",
    ],
    ids=["column defaults", "enqueue's defaults"],
)
async def test_job_defaults_are_the_databases(db, insert):
    job_id = await scalar(db, insert)
    [stored] = await rows(db, SHOWN_DEFAULTS, job_id)
    assert stored == {"tenant": DEFAULT_TENANT, **dataclasses.asdict(JOB_DEFAULTS)}


async def test_schedule_defaults_are_the_databases(db):
    [stored] = await rows(
        db,
        "INSERT INTO sluice.schedules (name, cron, job)"
        " VALUES ('s', '@daily', '{\"task\": \"noop\"}')"
        " RETURNING tenant, timezone, misfire, enabled",
    )
    assert stored == {"tenant": DEFAULT_TENANT, **dataclasses.asdict(SCHEDULE_DEFAULTS)}


@pytest.mark.parametrize("name", list(NAME_RULES))
async def test_name_rules_are_the_databases(db, name):
    rule = NAME_RULES[name]
    definition = await scalar(
        db,
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c"
        " JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = 'sluice' AND c.conname = %s",
        rule.constraint,
    )
    assert definition is not None, f"no constraint {rule.constraint}"
    # SQL spells the rule as a class repetition plus a length test (no `{0,N}`,
    # which PostgreSQL's regex engine makes slow): the same language.
    [pattern] = re.findall(r"~ '((?:[^']|'')*)'", definition)
    [length] = re.findall(r"length\((?:VALUE|name)\) <= (\d+)", definition)
    assert pattern.replace("''", "'") == rule.pattern.replace(f"{{0,{rule.max_length - 1}}}", "*")
    assert int(length) == rule.max_length
    assert rule.match("a" * rule.max_length) and not rule.match("a" * (rule.max_length + 1))


async def test_ranges_and_choices_are_the_databases(db):
    insert = "INSERT INTO sluice.jobs (task, max_attempts, backoff) VALUES ('noop', %s, %s)"
    for attempts in (MAX_ATTEMPTS_MIN, MAX_ATTEMPTS_MAX):
        assert await refused(db, insert, attempts, "constant") is None
    # Refused by a constraint the API maps to the field at fault.
    for attempts in (MAX_ATTEMPTS_MIN - 1, MAX_ATTEMPTS_MAX + 1):
        constraint = await refused(db, insert, attempts, "constant")
        assert CONSTRAINT_FIELDS.get(constraint) == "max_attempts", constraint
    for backoff in BACKOFFS:
        assert await refused(db, insert, 1, backoff) is None
    assert CONSTRAINT_FIELDS.get(await refused(db, insert, 1, "zigzag")) == "backoff"

    schedule = (
        "INSERT INTO sluice.schedules (name, cron, job, misfire)"
        " VALUES ('s', '@daily', '{\"task\": \"noop\"}', %s)"
    )
    for misfire in MISFIRES:
        assert await refused(db, schedule, misfire) is None
    assert CONSTRAINT_FIELDS.get(await refused(db, schedule, "never")) == "misfire"


async def test_the_database_takes_every_value_the_api_takes(db):
    """Whatever REST accepts, SQL stores: the ends of every range the API checks."""
    for run_at in (RUN_AT_MIN, RUN_AT_END - timedelta(microseconds=1)):
        assert (
            await refused(db, "INSERT INTO sluice.jobs (task, run_at) VALUES ('noop', %s)", run_at)
            is None
        )
    longest = (
        "INSERT INTO sluice.jobs (task, timeout, backoff_base, backoff_max)"
        " VALUES ('noop', %s, %s, %s)"
    )
    timeout, backoff = (
        timedelta(seconds=TIMEOUT_SECONDS_MAX),
        timedelta(seconds=BACKOFF_SECONDS_MAX),
    )
    assert await refused(db, longest, timeout, backoff, backoff) is None
    deepest = Jsonb(nested(MAX_JSON_DEPTH))
    assert (
        await refused(db, "INSERT INTO sluice.jobs (task, payload) VALUES ('noop', %s)", deepest)
        is None
    )


async def test_the_database_refuses_what_the_api_refuses(db):
    """...and what REST refuses, SQL refuses too (a job SQL could enqueue is never refused
    over REST, nor the reverse)."""
    if not await scalar(
        db, "SELECT count(*) FROM pg_constraint WHERE conname = 'jobs_run_at_range'"
    ):
        pytest.xfail(
            "the engine's bounds (run_at, timeout, backoff, JSON depth: issue 11) are not merged"
        )
    run_at = "INSERT INTO sluice.jobs (task, run_at) VALUES ('noop', %s)"
    assert await refused(db, run_at, RUN_AT_MIN - timedelta(microseconds=1)) is not None
    assert await refused(db, run_at, RUN_AT_END) is not None
    too_long = timedelta(seconds=TIMEOUT_SECONDS_MAX + 1)
    assert await refused(
        db, "INSERT INTO sluice.jobs (task, timeout) VALUES ('noop', %s)", too_long
    )
    too_slow = timedelta(seconds=BACKOFF_SECONDS_MAX + 1)
    assert await refused(
        db, "INSERT INTO sluice.jobs (task, backoff_max) VALUES ('noop', %s)", too_slow
    )
    too_deep = Jsonb(nested(MAX_JSON_DEPTH + 1))
    assert await refused(
        db, "INSERT INTO sluice.jobs (task, payload) VALUES ('noop', %s)", too_deep
    )


async def _constraint_names(db) -> set[str]:
    """Every constraint of the sluice schema (tables and domains), and every name a
    sluice function raises with RAISE ... CONSTRAINT = '...'."""
    declared = {
        row["conname"]
        for row in await rows(
            db,
            "SELECT c.conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE n.nspname = 'sluice'",
        )
    }
    sources = await rows(
        db,
        "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'sluice'",
    )
    raised = {
        name
        for source in sources
        for name in re.findall(r"CONSTRAINT\s*=\s*'(\w+)'", source["prosrc"])
    }
    return declared | raised


async def test_every_constraint_the_api_maps_exists(db):
    names = await _constraint_names(db)
    assert sorted(set(CONSTRAINT_FIELDS) - names) == []


async def test_the_constraint_check_fails_on_a_name_that_is_gone(db):
    names = await _constraint_names(db)
    assert "jobs_task_valid" not in names and "queues_name_valid" not in names
    with pytest.raises(psycopg.errors.UndefinedObject):
        await db.execute("ALTER DOMAIN sluice.queue_name VALIDATE CONSTRAINT queues_name_valid")
