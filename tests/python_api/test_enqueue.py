"""Enqueueing from Python in the caller's transaction: psycopg sync and async,
SQLAlchemy sync and async; options; batches; typed arguments checked at the door."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import sluice
from sluice.core import enqueueing
from sluice.core.typed import PayloadMismatch
from tests.factories import rows, scalar
from tests.python_api.tasks import Box, Point, add, legacy, measure


def _sa_url(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+psycopg://", 1)


async def _count(db) -> int:
    return await scalar(db, "SELECT count(*) FROM sluice.jobs")


async def test_psycopg_sync_enqueues_in_the_callers_transaction(database_url, db):
    def work() -> tuple[int, int]:
        with psycopg.connect(database_url) as conn:
            kept = add.enqueue(conn, a=1, b=2).id
            conn.commit()
            dropped = add.enqueue(conn, a=3, b=4).id
            conn.rollback()
        return kept, dropped

    kept, dropped = await asyncio.to_thread(work)
    found = await rows(db, "SELECT id, task, queue, payload, max_attempts FROM sluice.jobs")
    assert found == [
        {
            "id": kept,
            "task": "py.add",
            "queue": "math",
            "payload": {"a": 1, "b": 2},
            "max_attempts": 3,
        }
    ]
    assert dropped != kept


async def test_psycopg_async_enqueues_in_the_callers_transaction(database_url, db):
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        async with conn.transaction(force_rollback=True):
            handle = await add.enqueue(conn, a=1, b=2)
            assert isinstance(handle, sluice.AsyncJobHandle)
            # Not committed: invisible to everyone else.
            assert await _count(db) == 0
        assert await _count(db) == 0
        async with conn.transaction():
            handle = await add.enqueue(conn, a=5)
    assert await scalar(db, "SELECT payload FROM sluice.jobs WHERE id = %s", handle.id) == {"a": 5}


async def test_sqlalchemy_sync_session_enqueues_with_its_own_rows(database_url, db):
    engine = create_engine(_sa_url(database_url))

    def work() -> int:
        with Session(engine) as session:
            session.execute(sluice_text("CREATE TABLE orders (id int PRIMARY KEY, job bigint)"))
            handle = add.enqueue(session, a=2, b=2)
            session.execute(sluice_text("INSERT INTO orders VALUES (1, :job)"), {"job": handle.id})
            session.commit()
            add.enqueue(session, a=9, b=9)
            session.rollback()
            return handle.id

    try:
        job = await asyncio.to_thread(work)
    finally:
        engine.dispose()
    assert await scalar(db, "SELECT job FROM orders") == job
    assert await _count(db) == 1


async def test_sqlalchemy_async_session_enqueues_with_its_own_rows(database_url, db):
    engine = create_async_engine(_sa_url(database_url))
    try:
        async with AsyncSession(engine) as session:
            await session.execute(
                sluice_text("CREATE TABLE orders (id int PRIMARY KEY, job bigint)")
            )
            handle = await add.enqueue(session, a=2, b=3)
            await session.execute(
                sluice_text("INSERT INTO orders VALUES (1, :job)"), {"job": handle.id}
            )
            await session.commit()
            await add.enqueue(session, a=9)
            await session.rollback()
    finally:
        await engine.dispose()
    assert await scalar(db, "SELECT job FROM orders") == handle.id
    assert await _count(db) == 1


def sluice_text(sql: str):
    from sqlalchemy import text

    return text(sql)


async def test_a_session_on_another_driver_is_refused_clearly():
    with pytest.raises(TypeError, match="expected a psycopg connection"):
        add.enqueue(object(), a=1)


async def test_typed_arguments_are_checked_at_enqueue_naming_the_field(database_url, db):
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(PayloadMismatch, match=r"payload\.a: Expected `int`, got `str`"):
            await add.enqueue(conn, a="one")
        with pytest.raises(PayloadMismatch, match=r"payload\.a: is required"):
            await add.enqueue(conn, b=1)
        with pytest.raises(PayloadMismatch, match=r"payload\.c: unknown field"):
            await add.enqueue(conn, a=1, c=2)
        with pytest.raises(PayloadMismatch, match=r"payload\.box\.high: is required"):
            await measure.enqueue(conn, box={"low": {"x": 0, "y": 0}}, at=datetime.now(UTC))
        with pytest.raises(TypeError, match="keyword arguments"):
            await add.enqueue(conn, 1, 2)
        # By name, a task declared in this process is checked the same way.
        with pytest.raises(PayloadMismatch, match=r"payload\.a"):
            await sluice.enqueue(conn, "py.add", {"a": [1]})
        # A batch is checked whole: the item that does not fit is named as above.
        with pytest.raises(PayloadMismatch, match=r"payload\.a: Expected `int`, got `str`"):
            await add.enqueue_many(conn, [{"a": 1}] * 3 + [{"a": "four"}])
        with pytest.raises(PayloadMismatch, match=r"payload: .*object"):
            await add.enqueue_many(conn, [{"a": 1}, {"a": object()}])
        at = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
        handle = await measure.enqueue(conn, box=Box(Point(0, 0), Point(2, 3)), at=at)
    assert await _count(db) == 1
    assert await scalar(db, "SELECT payload FROM sluice.jobs WHERE id = %s", handle.id) == {
        "box": {"low": {"x": 0.0, "y": 0.0}, "high": {"x": 2.0, "y": 3.0}, "label": "box"},
        "at": "2026-11-21T12:00:00Z",
    }


async def test_options_per_task_and_per_call(database_url, db):
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        parent = await add.enqueue(conn, a=1)
        child = await add.configure(
            priority=-5,
            queue="urgent",
            delay=timedelta(hours=1),
            timeout="30s",
            retry=sluice.Retry(max_attempts=7, backoff="linear", base="2s", max=60),
            depends_on=[parent],
            idempotency_key="child-1",
        ).enqueue(conn, a=2)
        again = await add.configure(idempotency_key="child-1").enqueue(conn, a=99)
        at = datetime(2030, 1, 1, tzinfo=UTC)
        later = await sluice.enqueue(conn, "anything.else", {"k": [1, 2]}, run_at=at, tenant="acme")
    assert again.id == child.id
    [row] = await rows(
        db,
        "SELECT state::text, priority, queue, max_attempts, backoff,"
        " extract(epoch FROM backoff_base) AS base, extract(epoch FROM backoff_max) AS cap,"
        " extract(epoch FROM timeout) AS timeout,"
        " run_at > now() + interval '59 minutes' AS delayed, payload"
        " FROM sluice.jobs WHERE id = %s",
        child.id,
    )
    assert row == {
        "state": "blocked",
        "priority": -5,
        "queue": "urgent",
        "max_attempts": 7,
        "backoff": "linear",
        "base": 2,
        "cap": 60,
        "timeout": 30,
        "delayed": True,
        "payload": {"a": 2},
    }
    assert await rows(db, "SELECT parent_id, child_id FROM sluice.job_edges") == [
        {"parent_id": parent.id, "child_id": child.id}
    ]
    assert await rows(
        db, "SELECT task, tenant, run_at, state::text FROM sluice.jobs WHERE id = %s", later.id
    ) == [{"task": "anything.else", "tenant": "acme", "run_at": at, "state": "scheduled"}]


async def test_bad_options_are_refused_before_any_sql():
    with pytest.raises(ValueError, match="run_at or delay"):
        add.configure(run_at=datetime.now(UTC), delay=5)
    with pytest.raises(TypeError, match="unknown option"):
        add.configure(colour="red")
    with pytest.raises(ValueError, match="backoff"):
        add.configure(retry={"backoff": "sideways"})
    with pytest.raises(ValueError, match="timeout"):
        add.configure(timeout="soon")
    with pytest.raises(ValueError, match="not a task name"):
        sluice.enqueue(None, "no spaces allowed", {})


async def test_zero_attempts_is_refused_not_replaced_by_the_default(database_url):
    """max_attempts=0 reaches the database's check, one job or many (a falsy value
    must not turn silently into the default of 5)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="jobs_max_attempts_range"):
            await add.configure(max_attempts=0).enqueue(conn, a=1)
        with pytest.raises(psycopg.errors.CheckViolation, match="jobs_max_attempts_range"):
            await add.enqueue_many(conn, [({"a": 1}, {"max_attempts": 0})])


async def test_enqueue_many_is_one_statement_in_order_with_keys_and_parents(database_url, db):
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        parent = await add.enqueue(conn, a=0)
        items = [{"a": i, "b": i} for i in range(5000)]
        items[10] = ({"a": 10, "b": 10}, {"idempotency_key": "ten", "depends_on": [parent]})
        items[20] = ({"a": 20, "b": 20}, {"idempotency_key": "ten"})  # the same job as items[10]
        items[30] = ({"a": 30}, {"priority": 3})
        handles = await add.enqueue_many(conn, items)
        await conn.commit()
        again = await add.enqueue_many(conn, [({"a": 1}, {"idempotency_key": "ten"})])
        await conn.commit()
    ids = [h.id for h in handles]
    assert len(ids) == 5000 and ids[20] == ids[10] and again[0].id == ids[10]
    assert len(set(ids)) == 4999
    stored = {
        r["id"]: r
        for r in await rows(
            db,
            "SELECT id, payload, priority, state::text, queue FROM sluice.jobs WHERE id <> %s",
            parent.id,
        )
    }
    assert len(stored) == 4999
    for i in (0, 1, 4999):
        assert stored[ids[i]]["payload"] == {"a": i, "b": i}
    assert stored[ids[10]]["state"] == "blocked" and stored[ids[30]]["priority"] == 3
    assert {r["queue"] for r in stored.values()} == {"math"}
    assert await rows(db, "SELECT parent_id, child_id FROM sluice.job_edges") == [
        {"parent_id": parent.id, "child_id": ids[10]}
    ]


def test_enqueue_many_sync_and_empty(database_url):
    with psycopg.connect(database_url) as conn:
        assert list(add.enqueue_many(conn, [])) == []
        handles = add.enqueue_many(conn, [{"a": 1}, {"a": 2}])
        conn.commit()
        assert [type(h) for h in handles] == [sluice.JobHandle] * 2
        assert [h.id for h in handles] == handles.ids == [handles[0].id, handles[-1].id]
        assert [h.id for h in handles[1:]] == handles.ids[1:]
        payloads = conn.execute(
            "SELECT payload FROM sluice.jobs WHERE id = ANY(%s) ORDER BY id",
            ([h.id for h in handles],),
        ).fetchall()
    assert payloads == [({"a": 1},), ({"a": 2},)]


def test_enqueue_many_in_psycopg_pipeline_mode(database_url):
    """COPY is not available in a pipeline: the batch goes as one JSON list."""
    with psycopg.connect(database_url) as conn:
        with conn.pipeline():
            handles = add.enqueue_many(conn, [{"a": 1}, {"a": 2}])
        conn.commit()
        payloads = conn.execute(
            "SELECT payload FROM sluice.jobs WHERE id = ANY(%s) ORDER BY id", (handles.ids,)
        ).fetchall()
    assert payloads == [({"a": 1},), ({"a": 2},)]


def test_sql_enqueue_many_answers_existing_keys_of_other_transactions(database_url):
    """sluice.enqueue_many waits for a key another transaction holds, then answers its job."""
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        [held] = first.execute(
            'SELECT sluice.enqueue_many(\'[{"task": "noop", "idempotency_key": "k"}]\')'
        ).fetchone()
        threading.Timer(0.3, first.commit).start()
        [answer] = second.execute(
            'SELECT sluice.enqueue_many(\'[{"task": "noop", "idempotency_key": "k"},'
            ' {"task": "noop"}]\')'
        ).fetchone()
        second.commit()
    assert answer[0] == held[0] and answer[1] != held[0]


def test_legacy_form_takes_the_whole_payload(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        one = legacy.enqueue(conn, {"any": ["thing"]})
        two = legacy.enqueue(conn, k=1)
        payloads = conn.execute(
            "SELECT payload FROM sluice.jobs WHERE id IN (%s, %s) ORDER BY id", (one.id, two.id)
        ).fetchall()
    assert payloads == [({"any": ["thing"]},), ({"k": 1},)]
    assert add(1, 2) == 3 and add(a=1) == 1  # still a plain function


async def test_start_run_of_a_stored_dag_with_params(database_url, db):
    await db.execute(
        """INSERT INTO sluice.dags (name, version, definition) VALUES ('nightly', 1,
           '{"nodes": [{"id": "a", "task": "noop", "payload": {"day": "{{ params.day }}"}}]}')"""
    )
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        run = await sluice.start_run(conn, "nightly", {"day": "2026-11-21"})
        await conn.rollback()
        assert await scalar(db, "SELECT count(*) FROM sluice.dag_runs") == 0
        run = await sluice.start_run(conn, "nightly", {"day": "2026-11-21"}, idempotency_key="n1")
        await conn.commit()
    assert await rows(
        db,
        "SELECT r.params, j.payload FROM sluice.dag_runs r"
        " JOIN sluice.jobs j ON j.run_id = r.id WHERE r.id = %s",
        run.id,
    ) == [{"params": {"day": "2026-11-21"}, "payload": {"day": "2026-11-21"}}]


async def test_the_sql_paths_give_a_job_the_same_defaults(database_url, db):
    """A plain INSERT, sluice.enqueue (without a key and with one),
    sluice.enqueue_many and the Python API's COPY: the same row."""
    plain = await scalar(db, "INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id")
    one = await scalar(db, "SELECT sluice.enqueue('noop')")
    keyed = await scalar(db, "SELECT sluice.enqueue('noop', idempotency_key => 'k')")
    [many] = await scalar(db, """SELECT sluice.enqueue_many('[{"task": "noop"}]')""")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        [copied] = (await legacy.enqueue_many(conn, [{}])).ids
    columns = (
        "tenant, queue, payload, priority, state::text, max_attempts, backoff, backoff_base,"
        " backoff_max, timeout, notify, run_at <= now() AS due"
    )
    found = await rows(
        db,
        f"SELECT {columns} FROM sluice.jobs WHERE id = ANY(%s) ORDER BY id",  # noqa: S608
        [plain, one, keyed, many, copied],
    )
    assert len(found) == 5 and all(row == found[0] for row in found)


# The options a job can carry, each away from its default, and each at it.
OPTIONS = {
    "queue": "urgent",
    "priority": -5,
    "max_attempts": 7,
    "timeout": "90s",
    "retry": sluice.Retry(backoff="linear", base="2s", max=60),
    "run_at": datetime(2030, 1, 1, tzinfo=UTC),
    "tenant": "acme",
    "notify": {"webhook": {"url": "https://example.com/a%20b?c=%d", "on": ["failed"]}},
}
DEFAULTS = {
    "queue": "default",
    "priority": 0,
    "max_attempts": 5,
    "retry": sluice.Retry(backoff="exponential", base=1, max="1h"),
    "tenant": "default",
}
STORED = (  # run_at when given (the default is each transaction's now())
    "task, tenant, queue, payload, priority, state::text, max_attempts, backoff, backoff_base,"
    " backoff_max, timeout, notify, CASE WHEN run_at > now() THEN run_at END, idempotency_key"
)


async def _assert_one_row(db, ids: list[int], keys: list[str | None], given: dict) -> None:
    """The jobs `ids` hold the same row (STORED) but for their idempotency keys."""
    found = await rows(
        db,
        f"SELECT {STORED} FROM sluice.jobs WHERE id = ANY(%s) ORDER BY id",  # noqa: S608
        ids,
    )
    assert [row.pop("idempotency_key") for row in found] == keys
    assert len(found) == len(ids) and all(row == found[0] for row in found)
    assert found[0]["state"] == ("scheduled" if "run_at" in given else "ready")


@pytest.mark.parametrize("given", [OPTIONS, DEFAULTS, {}], ids=["options", "defaults", "none"])
async def test_enqueue_many_by_copy_stores_what_sluice_enqueue_stores(database_url, db, given):
    """A batch of jobs sharing their options goes in by COPY; each row is the one
    sluice.enqueue (one job) and sluice.enqueue_many (a job with a key) write."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        task = legacy.configure(**given)
        single = await task.enqueue(conn, {"n": 1})
        copied = await task.enqueue_many(conn, [{"n": 1}, {"n": 1}])
        keyed = await task.enqueue_many(conn, [({"n": 1}, {"idempotency_key": "k"})])
    ids = [single.id, *copied.ids, keyed[0].id]
    await _assert_one_row(db, ids, [None, None, None, "k"], given)


@pytest.mark.parametrize("given", [OPTIONS, DEFAULTS, {}], ids=["options", "defaults", "none"])
async def test_enqueue_by_insert_stores_what_sluice_enqueue_stores(database_url, db, given):
    """One job without a key or parents goes in by job_insert (sluice.enqueue's
    INSERT, its shared arguments written into the statement): the row sluice.enqueue
    writes for the same arguments, without a key and with one; sync and async."""
    task = legacy.configure(**given)
    with psycopg.connect(database_url, autocommit=True) as conn:
        synced = task.enqueue(conn, {"n": 1}).id
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        inserted = await task.enqueue(conn, {"n": 1})
        arguments = enqueueing._one_params("py.legacy", b'{"n": 1}', task._call.opts)
        function = await enqueueing.job_enqueue(conn, **arguments)
        keyed = await legacy.configure(**given, idempotency_key="k").enqueue(conn, {"n": 1})
    ids = [synced, inserted.id, function, keyed.id]
    await _assert_one_row(db, ids, [None, None, None, "k"], given)


async def test_enqueue_by_insert_refuses_what_sluice_enqueue_refuses(database_url, db):
    """Options written into the statement as literals are checked by the table as
    sluice.enqueue's are; a refused job leaves nothing, and the statement keeps
    values holding quotes, backslashes and % as given."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="jobs_max_attempts_range"):
            await legacy.configure(max_attempts=0).enqueue(conn, {})
        with pytest.raises(psycopg.errors.CheckViolation, match="queue_name_valid"):
            await legacy.configure(queue="it's").enqueue(conn, {})
        with pytest.raises(psycopg.errors.CheckViolation, match="tenant_name_valid"):
            await legacy.configure(tenant="t'1 %s").enqueue(conn, {})
        assert await _count(db) == 0
        url = "https://example.com/o'brien\\?q=%s&r=%(x)s&s=%%"
        notify = {"webhook": {"url": url, "secret": "it's \\ %d"}}
        handle = await legacy.configure(notify=notify).enqueue(conn, {"p": "%s"})
    [found] = await rows(
        db, "SELECT notify, payload FROM sluice.jobs WHERE id = ANY(%s)", [handle.id]
    )
    assert found == {"notify": notify, "payload": {"p": "%s"}}


async def test_enqueue_many_by_copy_keeps_payloads_and_values_as_given(database_url, db):
    """COPY's text format escapes backslashes, tabs and newlines; JSON and option
    values holding them, or %, arrive unchanged, in the items' order."""
    tricky = [
        {"s": "back\\slash \\N \\t", "t": "tab\tnew\nline\rcr"},
        {"pct": "%d %s %b %%", "quote": "\"'", "u": "é ✓ \u2028"},
        {"nested": {"list": [1, 2.5, None, True, "\\"]}, "empty": {}},
        {},
    ]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        handles = await legacy.configure(
            queue="q.1:x-y_z", notify={"email": {"to": ["a\\b@example.com"]}}
        ).enqueue_many(conn, tricky)
        await conn.commit()
    found = await rows(
        db,
        "SELECT payload, queue, notify FROM sluice.jobs WHERE id = ANY(%s) ORDER BY id",
        handles.ids,
    )
    assert [r["payload"] for r in found] == tricky
    assert {r["queue"] for r in found} == {"q.1:x-y_z"}
    assert found[0]["notify"] == {"email": {"to": ["a\\b@example.com"]}}


async def test_enqueue_many_by_copy_refuses_what_the_table_refuses(database_url, db):
    """The same named constraints as the other paths; a refused batch leaves
    nothing, in the caller's transaction or on its own (autocommit)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cases = [
            ({"max_attempts": 0}, psycopg.errors.CheckViolation, "jobs_max_attempts_range"),
            ({"timeout": "31d"}, psycopg.errors.CheckViolation, "jobs_timeout_max"),
            ({"queue": "a\tb"}, psycopg.errors.CheckViolation, "queue_name_valid"),
            ({"queue": "-x"}, psycopg.errors.CheckViolation, "queue_name_valid"),
            ({"notify": {"webhook": {}}}, psycopg.errors.CheckViolation, "notify_spec_valid"),
            ({"retry": {"base": "2h"}}, psycopg.errors.CheckViolation, "jobs_backoff_range"),
        ]
        for given, error, name in cases:
            with pytest.raises(error, match=name):
                await add.configure(**given).enqueue_many(conn, [{"a": 1}, {"a": 2}])
        # A payload jsonb refuses (PostgreSQL's JSON has no \u0000), the last of many.
        with pytest.raises(psycopg.errors.UntranslatableCharacter):
            await legacy.enqueue_many(conn, [{"n": i} for i in range(99)] + [{"s": "\x00"}])
        async with conn.transaction():
            kept = await add.enqueue_many(conn, [{"a": 1}])
            with pytest.raises(psycopg.errors.CheckViolation):
                async with conn.transaction():  # a savepoint: the outer batch stays
                    await add.configure(max_attempts=0).enqueue_many(conn, [{"a": 2}])
    assert await rows(db, "SELECT id, payload FROM sluice.jobs") == [
        {"id": kept[0].id, "payload": {"a": 1}}
    ]


async def test_enqueue_many_batches_on_two_connections_get_their_own_ids_in_order(database_url, db):
    """Ids reserved by concurrent batches never collide, and each batch's handles
    follow its items; the jobs' own triggers ran (future run_at: scheduled)."""
    at = datetime(2030, 1, 1, tzinfo=UTC)

    async def batch(tag: str) -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            handles = await legacy.configure(run_at=at).enqueue_many(
                conn, [{"tag": tag, "i": i} for i in range(3000)]
            )
            await conn.commit()
            return handles.ids

    first, second = await asyncio.gather(batch("x"), batch("y"))
    assert not set(first) & set(second)
    stored = {
        r["id"]: r for r in await rows(db, "SELECT id, payload, state::text FROM sluice.jobs")
    }
    assert len(stored) == 6000
    for tag, ids in (("x", first), ("y", second)):
        assert [stored[i]["payload"] for i in ids] == [{"tag": tag, "i": i} for i in range(3000)]
    assert {r["state"] for r in stored.values()} == {"scheduled"}
    # The identity goes on after the reserved ids.
    later = await scalar(db, "INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id")
    assert later > max(first + second)


async def test_sqlalchemy_sessions_enqueue_many_in_their_transaction(database_url, db):
    sync_engine = create_engine(_sa_url(database_url))
    async_engine = create_async_engine(_sa_url(database_url))

    def work() -> list[int]:
        with Session(sync_engine) as session:
            kept = add.enqueue_many(session, [{"a": 1}, {"a": 2}]).ids
            session.commit()
            add.enqueue_many(session, [{"a": 3}])
            session.rollback()
            return kept

    try:
        kept = await asyncio.to_thread(work)
        async with AsyncSession(async_engine) as session:
            kept += (await add.enqueue_many(session, [{"a": 4}])).ids
            await session.commit()
            await add.enqueue_many(session, [{"a": 5}])
            await session.rollback()
    finally:
        sync_engine.dispose()
        await async_engine.dispose()
    found = await rows(db, "SELECT id, payload FROM sluice.jobs ORDER BY id")
    assert found == [{"id": i, "payload": {"a": a}} for i, a in zip(kept, (1, 2, 4), strict=True)]


async def test_sluice_enqueue_without_a_key_inserts_without_on_conflict(db):
    """ON CONFLICT makes an insertion speculative: a second WAL record (Heap
    HEAP_CONFIRM), 66 bytes a job. sluice.enqueue writes one only with a key."""
    await db.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")

    async def heap_records(call: str) -> list[str]:
        start = await scalar(db, "SELECT pg_current_wal_insert_lsn()")
        async with db.transaction():
            await db.execute("SET LOCAL synchronous_commit = on")  # flush: inspectable
            await db.execute(call)
            xid = await scalar(db, "SELECT pg_current_xact_id()::text")
        end = await scalar(db, "SELECT pg_current_wal_flush_lsn()")
        # This transaction's records only: the server's other sessions (autovacuum,
        # what an earlier test left running) write WAL in the same range.
        return [
            r["record_type"]
            for r in await rows(
                db,
                "SELECT record_type FROM pg_get_wal_records_info(%s, %s)"
                " WHERE resource_manager = 'Heap' AND xid = %s::xid",
                start,
                end,
                xid,
            )
        ]

    assert "HEAP_CONFIRM" not in await heap_records("SELECT sluice.enqueue('noop')")
    assert "HEAP_CONFIRM" in await heap_records(
        "SELECT sluice.enqueue('noop', idempotency_key => 'k')"
    )


@pytest.mark.parametrize("threshold", [None, 5])
async def test_enqueue_by_insert_prepares_only_where_the_connection_does(database_url, threshold):
    """job_insert is prepared at its first run, except on a connection that prepares
    nothing (prepare_threshold None: a pooler in transaction mode in front)."""
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, prepare_threshold=threshold
    ) as conn:
        await add.enqueue(conn, a=1, b=2)
        cur = await conn.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in await cur.fetchall()]
    assert len(prepared) == (0 if threshold is None else 1)
    assert all("sluice.enqueue_row" in statement for statement in prepared)
