"""The API's set-based submit (engine.job_submit_many, sluice.job_submit_rows):
the jobs go in as JSON columns, a field every job has alike sent once and any
other once per job. Whichever way a field travels, every job is stored as given,
in input order, with the default retry policy stored as null, idempotency keys
already used skipped, and bad values refused by the constraint that names them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from sluice.core import engine
from sluice.core.jobs import JOB_DEFAULTS
from tests.factories import rows, scalar

FAR = datetime(2999, 1, 1, tzinfo=UTC)


def job(**fields: Any) -> dict[str, Any]:
    """A job as the API passes it: every field, the defaults filled in."""
    base = {"task": "noop", "payload": {}} | dataclasses.asdict(JOB_DEFAULTS)
    base |= {"run_at": None, "delay_seconds": None, "idempotency_key": None}
    return base | {"fingerprint": None, "notify": None} | fields


async def stored(db, ids: list[int]) -> list[dict[str, Any]]:
    """The stored rows of `ids`, in that order."""
    found = await rows(
        db,
        "SELECT j.id, j.tenant, j.queue, j.task, j.payload, j.priority, j.run_at, j.state,"
        " j.max_attempts, j.backoff, j.backoff_base, j.backoff_max, j.timeout,"
        " j.idempotency_key, j.request_fingerprint, j.notify"
        " FROM sluice.jobs j WHERE j.id = ANY(%s)",
        ids,
    )
    by_id = {row["id"]: row for row in found}
    return [by_id[i] for i in ids]


async def test_fields_that_vary_and_fields_alike_are_stored_as_given(db):
    notify = {"webhook": {"url": "https://example.com/hook"}}
    jobs = [
        job(payload={"i": 0}, queue="a", priority=7, max_attempts=3, backoff_max=60.0),
        job(payload={"i": 1}, queue="b", priority=7, backoff="linear", timeout=30.0),
        job(payload=[1, "x"], queue="a", priority=7, run_at=FAR, notify=notify),
        job(payload="text", queue="c", priority=7, delay_seconds=3600.0, backoff_max=3600.0),
    ]
    before = await scalar(db, "SELECT now()")
    inserted = await engine.job_submit_many(db, jobs=jobs, tenant="acme")
    assert [r.idempotency_key for r in inserted] == [None] * 4
    ids = [r.id for r in inserted]
    assert ids == sorted(ids)
    got = await stored(db, ids)
    assert [r["tenant"] for r in got] == ["acme"] * 4
    assert [r["task"] for r in got] == ["noop"] * 4
    assert [r["payload"] for r in got] == [{"i": 0}, {"i": 1}, [1, "x"], "text"]
    assert [r["queue"] for r in got] == ["a", "b", "a", "c"]
    assert [r["priority"] for r in got] == [7] * 4
    assert [r["max_attempts"] for r in got] == [3, 5, 5, 5]
    # The default retry policy is stored as null, row by row.
    assert [r["backoff"] for r in got] == [None, "linear", None, None]
    assert [r["backoff_base"] for r in got] == [None] * 4
    assert [r["backoff_max"] for r in got] == [timedelta(seconds=60), None, None, None]
    assert [r["timeout"] for r in got] == [None, timedelta(seconds=30), None, None]
    assert [r["notify"] for r in got] == [None, None, notify, None]
    assert [r["state"] for r in got] == ["ready", "ready", "scheduled", "scheduled"]
    assert got[2]["run_at"] == FAR
    assert got[3]["run_at"] >= before + timedelta(seconds=3600)
    assert got[0]["run_at"] < FAR and got[1]["run_at"] < before + timedelta(seconds=60)


async def test_settings_every_job_shares_are_stored_on_every_job(db):
    alike = {
        "task": "sleep",
        "queue": "media",
        "priority": -3,
        "max_attempts": 2,
        "backoff": "constant",
        "backoff_base": 2.5,
        "backoff_max": 10.0,
        "timeout": 30.0,
        "delay_seconds": 3600.0,
        "notify": {"webhook": {"url": "https://example.com/hook"}},
    }
    jobs = [job(payload={"i": i}, **alike) for i in range(3)]
    got = await stored(db, [r.id for r in await engine.job_submit_many(db, jobs=jobs, tenant="t")])
    for i, row in enumerate(got):
        assert row["payload"] == {"i": i} and row["task"] == "sleep" and row["queue"] == "media"
        assert (row["priority"], row["max_attempts"], row["backoff"]) == (-3, 2, "constant")
        assert row["backoff_base"] == timedelta(seconds=2.5)
        assert row["backoff_max"] == timedelta(seconds=10)
        assert row["timeout"] == timedelta(seconds=30) and row["state"] == "scheduled"
        assert row["notify"] == {"webhook": {"url": "https://example.com/hook"}}
    defaults = await engine.job_submit_many(db, jobs=[job(), job()], tenant="t")
    for row in await stored(db, [r.id for r in defaults]):
        assert (row["queue"], row["priority"], row["max_attempts"]) == ("default", 0, 5)
        assert (row["backoff"], row["backoff_base"], row["backoff_max"]) == (None, None, None)
        assert row["timeout"] is None and row["state"] == "ready"


async def test_a_large_batch_comes_back_in_input_order(db):
    jobs = [job(payload={"i": i}, priority=i % 3) for i in range(3000)]
    inserted = await engine.job_submit_many(db, jobs=jobs, tenant="default")
    got = await stored(db, [r.id for r in inserted])
    assert [row["payload"]["i"] for row in got] == list(range(3000))
    assert [row["priority"] for row in got] == [i % 3 for i in range(3000)]


async def test_keys_already_used_by_the_tenant_are_skipped_exactly(db):
    first = await engine.job_submit_many(
        db,
        jobs=[job(idempotency_key="k1", fingerprint="f1"), job(idempotency_key="k3")],
        tenant="default",
    )
    # Another tenant's key is no reason to skip.
    await engine.job_submit_many(db, jobs=[job(idempotency_key="k2")], tenant="other")
    keys = ["k0", "k1", None, "k2", "k3", None]
    jobs = [job(payload={"i": i}, idempotency_key=k) for i, k in enumerate(keys)]
    async with db.transaction():
        inserted = await engine.job_submit_many(db, jobs=jobs, tenant="default")
        # Skipping is for that statement only: a plain insert of a used key still fails.
        with pytest.raises(psycopg.errors.UniqueViolation) as error:
            async with db.transaction():
                await db.execute(
                    "INSERT INTO sluice.jobs (task, idempotency_key) VALUES ('noop', 'k1')"
                )
        assert error.value.diag.constraint_name == "jobs_idempotency_key"
    assert [r.idempotency_key for r in inserted] == ["k0", None, "k2", None]
    got = await stored(db, [r.id for r in inserted])
    assert [row["payload"]["i"] for row in got] == [0, 2, 3, 5]
    holders = await rows(
        db,
        "SELECT idempotency_key, job_id FROM sluice.job_keys WHERE tenant = 'default'"
        " ORDER BY idempotency_key",
    )
    assert [(h["idempotency_key"], h["job_id"]) for h in holders] == [
        ("k0", inserted[0].id),
        ("k1", first[0].id),
        ("k2", inserted[2].id),
        ("k3", first[1].id),
    ]
    assert (await stored(db, [first[0].id]))[0]["request_fingerprint"] == "f1"
    # A batch of one (every field alike) is skipped the same way.
    assert (
        await engine.job_submit_many(db, jobs=[job(idempotency_key="k1")], tenant="default") == []
    )
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 7


BAD = [
    ("queue", "a b", "queue_name_valid"),
    ("task", "1x", "task_name_valid"),
    ("backoff", "wild", "jobs_backoff_valid"),
    ("backoff_base", 20.0, "jobs_backoff_range"),
    ("timeout", 0.0, "jobs_timeout_positive"),
    ("max_attempts", 0, "jobs_max_attempts_range"),
    ("run_at", datetime(9500, 1, 1, tzinfo=UTC), "jobs_run_at_range"),
]


@pytest.mark.parametrize("alike", [True, False], ids=["every-job", "one-job"])
@pytest.mark.parametrize(("field", "value", "constraint"), BAD, ids=[b[2] for b in BAD])
async def test_a_bad_value_is_refused_by_its_constraint(db, alike, field, value, constraint):
    jobs = [job(backoff_max=10.0), job(backoff_max=10.0, **{field: value})]
    if alike:
        jobs[0] = jobs[1]
    with pytest.raises(psycopg.errors.IntegrityError) as error:
        await engine.job_submit_many(db, jobs=jobs, tenant="default")
    assert error.value.diag.constraint_name == constraint
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 0


async def test_a_bad_tenant_is_refused_by_its_constraint(db):
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await engine.job_submit_many(db, jobs=[job()], tenant="no tenant")
    assert error.value.diag.constraint_name == "tenant_name_valid"
