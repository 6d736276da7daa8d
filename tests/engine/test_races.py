"""Races of the DAG engine, attacked with real concurrent transactions.

Each race runs ROUNDS times with two transactions released together, and once
as a deterministic interleaving with one transaction held open across the
other. See docs/state-machine.md for the locking argument they test:
  * edges inserted at once must never commit a cycle;
  * retrying a failed parent while a co-parent fails (or succeeds) must leave
    the child cancelled (or counting exactly its unfinished parents).
"""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest

from tests.engine.invariants import assert_invariants
from tests.factories import WORKER, insert_job, rows, scalar

ROUNDS = 200
EDGE = "INSERT INTO sluice.job_edges (parent_id, child_id) VALUES (%s, %s)"
FAIL = "SELECT * FROM sluice.job_fail_many(%s, %s, '{1}', '{boom}', '{true}')"
COMPLETE = "SELECT sluice.job_complete_many(%s, %s, '{1}', '{null}'::jsonb[])"
RETRY_DEAD = "SELECT sluice.retry_dead(%s)"
EXPIRE = "UPDATE sluice.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s"
RESCUE = "SELECT * FROM sluice.job_rescue_expired(100)"


async def in_transaction(conn, *statements):
    """Run (sql, params) pairs in one transaction of `conn`."""
    async with conn.transaction():
        for sql, params in statements:
            await conn.execute(sql, params)


async def together(*coroutines):
    """Start the transactions at once; answer each one's exception or None."""
    barrier = asyncio.Barrier(len(coroutines))

    async def released(coroutine):
        await barrier.wait()
        await coroutine

    results = await asyncio.gather(*(released(c) for c in coroutines), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


async def waits_on_a_lock(observer, pid, task) -> bool:
    """Bounded wait until backend `pid` waits on a lock (True) or `task` ended (False)."""
    async with asyncio.timeout(10):
        while not task.done():
            state = await scalar(
                observer, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", pid
            )
            if state == "Lock":
                return True
            await asyncio.sleep(0.002)
    return False


async def new_jobs(conn, n, **columns) -> list[int]:
    """`n` new jobs (plain SQL, one statement), in id order."""
    names = ", ".join(["task", *columns])
    values = ", ".join(["'noop'", *(f"%({k})s" for k in columns)])
    cur = await conn.execute(
        f"INSERT INTO sluice.jobs ({names}) SELECT {values}"  # noqa: S608 - test helper, names are ours
        " FROM generate_series(1, %(n)s) RETURNING id",
        {**columns, "n": n},
    )
    return sorted(r[0] for r in await cur.fetchall())


async def add_edges(conn, pairs):
    await conn.execute(
        "INSERT INTO sluice.job_edges SELECT * FROM unnest(%s::bigint[], %s::bigint[])",
        ([p for p, _ in pairs], [c for _, c in pairs]),
    )


# -- 1. edges inserted at once never commit a cycle ----------------------------------


async def square(conn, rounds):
    """Per round, jobs a b c d with edges b->c and d->a: a->b and c->d would close a cycle."""
    ids = await new_jobs(conn, 4 * rounds)
    quads = [tuple(ids[4 * i : 4 * i + 4]) for i in range(rounds)]
    await add_edges(conn, [e for a, b, c, d in quads for e in ((b, c), (d, a))])
    return quads


def refused_as_cycle(error) -> bool:
    return (
        isinstance(error, psycopg.errors.CheckViolation)
        and error.diag.constraint_name == "job_edges_acyclic"
    )


@pytest.mark.slow
async def test_two_edges_inserted_at_once_never_close_a_cycle(db, connect):
    one, two = await connect(), await connect()
    for a, b, c, d in await square(db, ROUNDS):
        errors = await together(
            in_transaction(one, (EDGE, (a, b))), in_transaction(two, (EDGE, (c, d)))
        )
        failed = [e for e in errors if e is not None]
        assert len(failed) == 1, f"round {a}: {errors}"
        assert refused_as_cycle(failed[0]), failed[0]
    await assert_invariants(db)


async def test_an_edge_waits_for_an_open_edge_insert_then_sees_its_cycle(db, connect):
    [(a, b, c, d)] = await square(db, 1)
    one, two = await connect(), await connect()
    async with one.transaction():
        await one.execute(EDGE, (a, b))
        other = asyncio.ensure_future(in_transaction(two, (EDGE, (c, d))))
        assert await waits_on_a_lock(db, two.info.backend_pid, other), "c->d did not wait"
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await other
    assert refused_as_cycle(error.value)
    await assert_invariants(db)


async def test_jobs_updated_in_the_transaction_skip_the_turn_and_still_see_the_cycle(db, connect):
    """b and c (all that b reaches) were updated by the inserting transaction, so
    a->b skips the turn; c->d must then wait for the row lock on c, and sees a->b."""
    [(a, b, c, d)] = await square(db, 1)
    one, two = await connect(), await connect()
    async with one.transaction():
        await one.execute("UPDATE sluice.jobs SET priority = 1 WHERE id = ANY(%s)", ([b, c],))
        await one.execute(EDGE, (a, b))
        other = asyncio.ensure_future(in_transaction(two, (EDGE, (c, d))))
        assert await waits_on_a_lock(db, two.info.backend_pid, other), "c->d did not wait"
        turns = "SELECT turns FROM sluice.job_edges_turn"
        assert await scalar(one, turns) == await scalar(db, turns)  # a->b took no turn
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await other
    assert refused_as_cycle(error.value)
    await assert_invariants(db)


async def test_a_repeatable_read_edge_insert_is_refused_when_edges_changed_since_its_snapshot(
    db, connect
):
    [(a, b, c, d)] = await square(db, 1)
    one = await connect()
    async with one.transaction():
        await one.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await one.execute("SELECT count(*) FROM sluice.job_edges")  # takes the snapshot
        await db.execute(EDGE, (c, d))  # commits after that snapshot
        with pytest.raises(psycopg.errors.SerializationFailure):
            await one.execute(EDGE, (a, b))
    await assert_invariants(db)


async def test_a_repeatable_read_edge_insert_works_when_nothing_changed(db, connect):
    [(a, b, _, _)] = await square(db, 1)
    one = await connect()
    async with one.transaction():
        await one.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await one.execute("SELECT count(*) FROM sluice.job_edges")
        await one.execute(EDGE, (a, b))
    assert await scalar(db, "SELECT state::text FROM sluice.jobs WHERE id = %s", b) == "blocked"


async def test_edges_of_jobs_created_in_the_transaction_do_not_wait_their_turn(db, connect):
    """A run, and new jobs depending on existing ones, are created while another
    transaction holds the turn of edges between existing jobs."""
    x, y, parent = await new_jobs(db, 3)
    holder, creator = await connect(), await connect()
    diamond = {
        "nodes": [
            {"id": "a", "task": "noop"},
            {"id": "b", "task": "noop", "depends_on": ["a"]},
            {"id": "c", "task": "noop", "depends_on": ["a"]},
            {"id": "d", "task": "noop", "depends_on": ["b", "c"]},
        ]
    }

    async def new_child_of_existing_parent():
        async with creator.transaction():
            child = await insert_job(creator)
            await creator.execute(EDGE, (parent, child))

    async with holder.transaction():
        await holder.execute(EDGE, (x, y))  # between existing jobs: holds the turn
        for work in (
            creator.execute(
                "SELECT sluice.dag_run_create('default', %s::jsonb)", (json.dumps(diamond),)
            ),
            new_child_of_existing_parent(),
        ):
            task = asyncio.ensure_future(work)
            assert not await waits_on_a_lock(db, creator.info.backend_pid, task)
            await task
        # Between existing jobs, it does wait.
        task = asyncio.ensure_future(in_transaction(creator, (EDGE, (parent, x))))
        assert await waits_on_a_lock(db, creator.info.backend_pid, task)
    await task
    await assert_invariants(db)


# -- 2. retrying a failed parent while a co-parent ends --------------------------------


async def failed_diamonds(conn, rounds):
    """Per round a->d, b->d: `a` failed (so d is cancelled), `b` running on its last attempt."""
    a_ids = await new_jobs(conn, rounds, queue="race-a", max_attempts=1)
    b_ids = await new_jobs(conn, rounds, queue="race-b", max_attempts=1)
    d_ids = await new_jobs(conn, rounds)
    await add_edges(
        conn, [e for a, b, d in zip(a_ids, b_ids, d_ids, strict=True) for e in ((a, d), (b, d))]
    )
    await claim_all(conn, "race-a", rounds)
    await conn.execute(
        "SELECT * FROM sluice.job_fail_many(%s, %s, %s, %s, %s)",
        (WORKER, a_ids, [1] * rounds, ["boom"] * rounds, [False] * rounds),
    )
    await claim_all(conn, "race-b", rounds)
    assert (
        await scalar(
            conn,
            "SELECT count(*) FROM sluice.jobs WHERE id = ANY(%s) AND state = 'cancelled'",
            d_ids,
        )
        == rounds
    )
    return list(zip(a_ids, b_ids, d_ids, strict=True))


async def claim_all(conn, queue, n):
    claimed = await rows(
        conn, "SELECT id FROM sluice.job_claim(%s, %s, %s, '1 hour')", WORKER, [queue], n
    )
    assert len(claimed) == n


def co_parent_fails(conn, b, round_number):
    """b's last attempt ends failed: reported by its worker, or rescued after its lease."""
    if round_number % 2:
        return in_transaction(conn, (FAIL, (WORKER, [b])))
    return in_transaction(conn, (EXPIRE, (b,)), (RESCUE, None))


async def job_state(conn, job_id):
    return await scalar(conn, "SELECT state::text FROM sluice.jobs WHERE id = %s", job_id)


@pytest.mark.slow
async def test_retrying_a_parent_while_its_co_parent_fails_never_strands_the_child(db, connect):
    one, two = await connect(), await connect()
    for n, (a, b, d) in enumerate(await failed_diamonds(db, ROUNDS)):
        errors = await together(in_transaction(one, (RETRY_DEAD, (a,))), co_parent_fails(two, b, n))
        assert errors == [None, None]
        assert await job_state(db, b) == "failed"
        assert await job_state(db, d) == "cancelled", f"round {n}: a={a} b={b} d={d}"
    await assert_invariants(db)


@pytest.mark.slow
async def test_retrying_a_parent_while_its_co_parent_succeeds_counts_the_child_right(db, connect):
    one, two = await connect(), await connect()
    for n, (a, b, d) in enumerate(await failed_diamonds(db, ROUNDS)):
        errors = await together(
            in_transaction(one, (RETRY_DEAD, (a,))), in_transaction(two, (COMPLETE, (WORKER, [b])))
        )
        assert errors == [None, None]
        found = await rows(
            db, "SELECT state::text, pending_parents FROM sluice.jobs WHERE id = %s", d
        )
        assert found == [{"state": "blocked", "pending_parents": 1}], f"round {n}"
    await assert_invariants(db)


@pytest.mark.parametrize("held", ["failure", "retry"])
async def test_retry_and_co_parent_failure_with_one_held_open(db, connect, held):
    [(a, b, d)] = await failed_diamonds(db, 1)
    retrier, failer = await connect(), await connect()
    first, second = (failer, retrier) if held == "failure" else (retrier, failer)
    second_work = (RETRY_DEAD, (a,)) if held == "failure" else (FAIL, (WORKER, [b]))
    async with first.transaction():
        await first.execute(*((FAIL, (WORKER, [b])) if held == "failure" else (RETRY_DEAD, (a,))))
        task = asyncio.ensure_future(in_transaction(second, second_work))
        # Fixed: the second waits for the first's lock on d, then re-reads.
        await waits_on_a_lock(db, second.info.backend_pid, task)
    await task
    assert await job_state(db, d) == "cancelled"
    await assert_invariants(db)


DAG_DIAMOND = json.dumps(
    {
        "nodes": [
            {"id": "a", "task": "noop", "queue": "race-a", "max_attempts": 1},
            {"id": "b", "task": "noop", "queue": "race-b", "max_attempts": 1},
            {"id": "d", "task": "noop", "depends_on": ["a", "b"]},
        ]
    }
)


async def run_everything(conn):
    """Claim and complete every job that becomes ready, until none is left."""
    while True:
        claimed = await rows(
            conn,
            "SELECT id, attempt"
            " FROM sluice.job_claim(%s, '{race-a,race-b,default}', 1000, '1 hour')",
            WORKER,
        )
        if not claimed:
            return
        await conn.execute(
            "SELECT sluice.job_complete_many(%s, %s, %s, %s::jsonb[])",
            (
                WORKER,
                [r["id"] for r in claimed],
                [r["attempt"] for r in claimed],
                [None] * len(claimed),
            ),
        )


@pytest.mark.slow
async def test_a_run_retried_while_a_node_fails_ends_instead_of_running_forever(db, connect):
    runs = []
    for _ in range(ROUNDS):
        run_id = await scalar(db, "SELECT sluice.dag_run_create('default', %s::jsonb)", DAG_DIAMOND)
        nodes = {
            r["node"]: r["id"]
            for r in await rows(db, "SELECT node, id FROM sluice.jobs WHERE run_id = %s", run_id)
        }
        runs.append((run_id, nodes))
    await claim_all(db, "race-a", ROUNDS)
    await db.execute(
        "SELECT * FROM sluice.job_fail_many(%s, %s, %s, %s, %s)",
        (WORKER, [n["a"] for _, n in runs], [1] * ROUNDS, ["boom"] * ROUNDS, [False] * ROUNDS),
    )
    await claim_all(db, "race-b", ROUNDS)
    one, two = await connect(), await connect()
    for i, (run_id, nodes) in enumerate(runs):
        # dag_run_retry retries b too when b's failure committed first; retry_dead never.
        retry = (
            ("SELECT sluice.dag_run_retry(%s)", (run_id,))
            if i % 4 < 2
            else (RETRY_DEAD, (nodes["a"],))
        )
        errors = await together(in_transaction(one, retry), co_parent_fails(two, nodes["b"], i))
        assert errors == [None, None]
        b_state, d_state = await job_state(db, nodes["b"]), await job_state(db, nodes["d"])
        assert (b_state, d_state) in {("failed", "cancelled"), ("ready", "blocked")}, (
            f"run {run_id}"
        )
    await assert_invariants(db)
    # Every retried node runs and succeeds; then every run ends, none stays running.
    await run_everything(db)
    ended = await rows(
        db,
        "SELECT r.state::text AS run, b.state::text AS b, count(*) FROM sluice.dag_runs r"
        " JOIN sluice.jobs b ON b.run_id = r.id AND b.node = 'b' GROUP BY 1, 2 ORDER BY 1",
    )
    assert {(r["run"], r["b"]) for r in ended} <= {("failed", "failed"), ("succeeded", "succeeded")}
    assert sum(r["count"] for r in ended) == ROUNDS
    await assert_invariants(db)


async def test_a_retry_then_a_co_parent_failure_in_one_graph_ends_cancelled(db):
    """The sequential baseline of the race: either order leaves d cancelled."""
    graphs = await failed_diamonds(db, 2)
    for order, (a, b, d) in zip(("retry first", "failure first"), graphs, strict=True):
        steps = [(RETRY_DEAD, (a,)), (FAIL, (WORKER, [b]))]
        for sql, params in steps if order == "retry first" else reversed(steps):
            await db.execute(sql, params)
        assert await job_state(db, d) == "cancelled", order
    await assert_invariants(db)


# -- 3. one lock order: a cancel and a completion batch never deadlock ----------------


@pytest.mark.slow
async def test_a_cancel_racing_a_completion_batch_never_deadlocks(db, connect):
    """A batch completes p and r while an operator cancels r and c (a child of p,
    with p < c < r): locking c before r would wait in a cycle with the batch,
    which holds r and wants c. Running rows are locked first, so neither waits
    for the other while holding what the other needs."""
    rounds = ROUNDS  # main deadlocked in 3 of 100 rounds
    ids = await new_jobs(db, 3 * rounds, queue="race-batch")
    triples = [tuple(ids[3 * i : 3 * i + 3]) for i in range(rounds)]
    await add_edges(db, [(p, c) for p, c, _ in triples])
    await claim_all(db, "race-batch", 2 * rounds)  # every p and r (each c is blocked)
    one, two = await connect(), await connect()
    complete_both = "SELECT sluice.job_complete_many(%s, %s, '{1,1}', '{null,null}'::jsonb[])"
    for p, c, r in triples:
        errors = await together(
            in_transaction(one, (complete_both, (WORKER, [p, r]))),
            in_transaction(two, ("SELECT sluice.job_cancel(%s)", ([c, r],))),
        )
        assert errors == [None, None], errors
        assert await job_state(db, c) == "cancelled"
    await assert_invariants(db)
