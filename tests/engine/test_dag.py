"""DAGs in plain SQL: edges, cycles, release of children, cancellation of
descendants, revival on retry, run state, and the races between parents."""

import asyncio
import itertools
import random

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.factories import WORKER, claim, complete, fail, fetch_job, insert_job, make_job


async def edge(conn, parent, child):
    await conn.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (parent, child))


async def states(conn, *ids):
    cur = await conn.execute(
        "SELECT id, state::text FROM sluice.jobs WHERE id = ANY(%s)", (list(ids),)
    )
    found = dict(await cur.fetchall())
    return [found[i] for i in ids]


async def run_to_success(conn, job_id, worker=WORKER):
    await claim(conn, job_id, worker=worker)
    assert await complete(conn, job_id, worker=worker)


async def test_the_spec_example_blocks_b_until_a_succeeds(db):
    async with db.transaction():
        a = await insert_job(db)
        b = await insert_job(db)
        await edge(db, a, b)
    assert await states(db, a, b) == ["ready", "blocked"]
    assert (await fetch_job(db, b))["pending_parents"] == 1
    await run_to_success(db, a)
    assert await states(db, b) == ["ready"]


async def test_child_is_released_in_the_transaction_of_its_last_parent(db, connect):
    a, b, c = [await insert_job(db) for _ in range(3)]
    await edge(db, a, c)
    await edge(db, b, c)
    await run_to_success(db, a)
    assert await states(db, c) == ["blocked"]
    await claim(db, b)
    other = await connect()
    async with db.transaction():
        assert await complete(db, b)
        assert await states(db, c) == ["ready"]  # inside the completing transaction
        assert await states(other, c) == ["blocked"]  # not yet visible outside
    assert await states(other, c) == ["ready"]


async def test_a_succeeded_parent_written_again_does_not_count_twice(db):
    """jobs_after_update's fast path for completions of plain jobs must tell a
    job that became succeeded from one that already was: a second write of a
    succeeded parent (a result corrected by hand, a batch of them) releases
    nothing, or a child of two parents would run after one of them."""
    a, b, c = [await insert_job(db) for _ in range(3)]
    await edge(db, a, c)
    await edge(db, b, c)
    await run_to_success(db, a)
    assert (await fetch_job(db, c))["pending_parents"] == 1
    await db.execute("UPDATE sluice.jobs SET result = '{\"fixed\": true}' WHERE id = %s", (a,))
    await db.execute("UPDATE sluice.jobs SET finished_at = finished_at WHERE id = ANY(%s)", ([a],))
    assert await states(db, c) == ["blocked"]
    assert (await fetch_job(db, c))["pending_parents"] == 1
    await run_to_success(db, b)
    assert await states(db, c) == ["ready"]


async def test_released_child_with_a_future_run_at_is_scheduled(db):
    a = await insert_job(db)
    b = await insert_job(db, run_at="2999-01-01")
    await edge(db, a, b)
    assert await states(db, b) == ["blocked"]
    await run_to_success(db, a)
    assert await states(db, b) == ["scheduled"]


async def test_a_diamond_runs_in_order(db):
    a, b, c, d = [await insert_job(db) for _ in range(4)]
    for parent, child in [(a, b), (a, c), (b, d), (c, d)]:
        await edge(db, parent, child)
    assert await states(db, a, b, c, d) == ["ready", "blocked", "blocked", "blocked"]
    await run_to_success(db, a)
    assert await states(db, b, c, d) == ["ready", "ready", "blocked"]
    await run_to_success(db, b)
    assert await states(db, d) == ["blocked"]
    await run_to_success(db, c)
    assert await states(db, d) == ["ready"]


async def test_an_edge_from_a_succeeded_parent_does_not_block(db):
    a = await insert_job(db)
    await run_to_success(db, a)
    b = await insert_job(db)
    await edge(db, a, b)
    assert await states(db, b) == ["ready"]


@pytest.mark.parametrize("length", [2, 3, 6])
async def test_an_edge_closing_a_cycle_is_refused_and_named(db, length):
    ids = [await insert_job(db) for _ in range(length)]
    for parent, child in itertools.pairwise(ids):
        await edge(db, parent, child)
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await edge(db, ids[-1], ids[0])
    assert error.value.diag.constraint_name == "job_edges_acyclic"
    cycle = " -> ".join(str(i) for i in [ids[-1], *ids])
    assert cycle in str(error.value)


async def test_a_cycle_inside_one_statement_is_refused(db):
    a, b, c = [await insert_job(db) for _ in range(3)]
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await db.execute(
            "INSERT INTO sluice.job_edges VALUES (%s, %s), (%s, %s), (%s, %s)",
            (a, b, b, c, c, a),
        )
    assert error.value.diag.constraint_name == "job_edges_acyclic"
    cur = await db.execute("SELECT count(*) FROM sluice.job_edges")
    assert await cur.fetchone() == (0,)


async def test_edges_against_id_order_without_a_cycle_are_accepted(db):
    # Children inserted before parents: the cycle check takes its slow path.
    c, b, a = [await insert_job(db) for _ in range(3)]
    await db.execute("INSERT INTO sluice.job_edges VALUES (%s, %s), (%s, %s)", (a, b, b, c))
    await edge(db, a, c)
    assert await states(db, a, b, c) == ["ready", "blocked", "blocked"]


async def test_a_self_edge_is_refused(db):
    a = await insert_job(db)
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await edge(db, a, a)
    assert error.value.diag.constraint_name == "job_edges_no_self_loop"


@pytest.mark.parametrize("child_state", ["running", "succeeded", "failed", "cancelled"])
async def test_an_edge_to_a_started_or_finished_child_is_refused(db, child_state):
    parent = await insert_job(db)
    child = await make_job(db, child_state)
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await edge(db, parent, child)
    assert error.value.diag.constraint_name == "job_edges_child_pending"
    assert child_state in str(error.value)


async def test_an_edge_from_a_failed_parent_is_refused(db):
    parent = await make_job(db, "failed")
    child = await insert_job(db)
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await edge(db, parent, child)
    assert error.value.diag.constraint_name == "job_edges_parent_alive"


async def test_deleting_an_edge_releases_the_child(db):
    a, b = await insert_job(db), await insert_job(db)
    await edge(db, a, b)
    await db.execute("DELETE FROM sluice.job_edges WHERE child_id = %s", (b,))
    assert await states(db, b) == ["ready"]


async def test_edges_cannot_be_updated(db):
    a, b, c = [await insert_job(db) for _ in range(3)]
    await edge(db, a, b)
    with pytest.raises(psycopg.errors.CheckViolation):
        await db.execute("UPDATE sluice.job_edges SET child_id = %s", (c,))


async def test_enqueue_with_depends_on(db):
    a = await insert_job(db)
    cur = await db.execute("SELECT sluice.enqueue('noop', depends_on => %s)", ([a, a],))
    b = (await cur.fetchone())[0]
    assert await states(db, b) == ["blocked"]
    assert (await fetch_job(db, b))["pending_parents"] == 1


# -- failure propagation and revival ------------------------------------------------


async def descendants_tree(db):
    """a -> b -> c, a -> d, and e -> c (c has a second parent)."""
    a, b, c, d, e = [
        await insert_job(db, backoff_base="0 seconds", max_attempts=1) for _ in range(5)
    ]
    for parent, child in [(a, b), (b, c), (a, d), (e, c)]:
        await edge(db, parent, child)
    return a, b, c, d, e


async def test_a_failed_parent_cancels_all_descendants_in_one_statement(db):
    a, b, c, d, e = await descendants_tree(db)
    await claim(db, a)
    await fail(db, a, retryable=False)
    assert await states(db, a, b, c, d, e) == [
        "failed",
        "cancelled",
        "cancelled",
        "cancelled",
        "ready",
    ]
    cur = await db.execute(
        "SELECT DISTINCT reason FROM sluice.jobs WHERE id = ANY(%s)", ([b, c, d],)
    )
    assert await cur.fetchall() == [("upstream_failed",)]


async def test_a_cancelled_parent_cancels_descendants_too(db):
    a, b, c, d, _ = await descendants_tree(db)
    await db.execute("SELECT sluice.cancel_job(%s)", (b,))
    assert await states(db, b, c, a, d) == ["cancelled", "cancelled", "ready", "blocked"]
    assert (await fetch_job(db, b))["reason"] == "cancelled"


async def test_retrying_a_failed_job_revives_its_cancelled_descendants(db):
    a, b, c, d, e = await descendants_tree(db)
    await claim(db, a)
    await fail(db, a, retryable=False)
    cur = await db.execute("SELECT * FROM sluice.job_retry(%s)", ([a],))
    assert await cur.fetchall() == [(a,)]
    assert await states(db, a, b, c, d) == ["ready", "blocked", "blocked", "blocked"]
    assert (await fetch_job(db, c))["pending_parents"] == 2  # b and e
    for job in (a, b, e):
        await run_to_success(db, job)
    assert await states(db, c, d) == ["ready", "ready"]


async def test_revival_stops_at_a_job_with_another_failed_parent(db):
    a, b, c, d, e = await descendants_tree(db)
    await claim(db, e)
    await fail(db, e, retryable=False)  # cancels c
    await claim(db, a)
    await fail(db, a, retryable=False)  # cancels b, d (c already cancelled)
    await db.execute("SELECT sluice.job_retry(%s)", ([a],))
    # c still has a failed parent (e), so it stays cancelled.
    assert await states(db, a, b, c, d) == ["ready", "blocked", "cancelled", "blocked"]


# -- runs -----------------------------------------------------------------------------


DIAMOND = """{"nodes": [
    {"id": "a", "task": "noop"},
    {"id": "b", "task": "noop", "depends_on": ["a"]},
    {"id": "c", "task": "noop", "depends_on": ["a"]},
    {"id": "d", "task": "noop", "depends_on": ["b", "c"], "max_attempts": 1}]}"""


async def create_run(db, definition=DIAMOND, **kwargs):
    cur = await db.execute("SELECT sluice.dag_run_create('default', %s::jsonb)", (definition,))
    run_id = (await cur.fetchone())[0]
    async with db.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT node, id FROM sluice.jobs WHERE run_id = %s", (run_id,))
        nodes = {r["node"]: r["id"] for r in await cur.fetchall()}
    return run_id, nodes


async def run_state(db, run_id):
    cur = await db.execute("SELECT state::text FROM sluice.dag_runs WHERE id = %s", (run_id,))
    return (await cur.fetchone())[0]


async def test_a_run_succeeds_when_every_node_has(db):
    run_id, nodes = await create_run(db)
    for node in "abc":
        await run_to_success(db, nodes[node])
        assert await run_state(db, run_id) == "running"
    await run_to_success(db, nodes["d"])
    assert await run_state(db, run_id) == "succeeded"
    cur = await db.execute(
        "SELECT percent_done, succeeded FROM sluice.dag_run_progress WHERE run_id = %s", (run_id,)
    )
    assert await cur.fetchone() == (100, 4)


async def test_a_run_fails_with_its_node_and_comes_back_on_retry(db):
    run_id, nodes = await create_run(db)
    for node in "abc":
        await run_to_success(db, nodes[node])
    await claim(db, nodes["d"])
    await fail(db, nodes["d"])
    assert await run_state(db, run_id) == "failed"
    cur = await db.execute("SELECT sluice.dag_run_retry(%s)", (run_id,))
    assert (await cur.fetchone())[0] == 1
    assert await run_state(db, run_id) == "running"
    await run_to_success(db, nodes["d"])
    assert await run_state(db, run_id) == "succeeded"


async def test_cancelling_a_run_cancels_its_unfinished_nodes(db):
    run_id, nodes = await create_run(db)
    await run_to_success(db, nodes["a"])
    await claim(db, nodes["b"])
    cur = await db.execute("SELECT sluice.dag_run_cancel(%s)", (run_id,))
    assert (await cur.fetchone())[0] == 3
    assert await states(db, nodes["a"], nodes["b"], nodes["c"], nodes["d"]) == [
        "succeeded",
        "cancelled",
        "cancelled",
        "cancelled",
    ]
    assert await run_state(db, run_id) == "cancelled"


async def test_run_parameters_fill_payload_placeholders(db):
    definition = '{"nodes": [{"id": "a", "task": "noop", "payload": {"day": "{{ params.day }}"}}]}'
    cur = await db.execute(
        "SELECT sluice.dag_run_create('default', %s::jsonb, %s::jsonb)",
        (definition, '{"day": "2026-11-22"}'),
    )
    run_id = (await cur.fetchone())[0]
    cur = await db.execute("SELECT payload FROM sluice.jobs WHERE run_id = %s", (run_id,))
    assert await cur.fetchone() == ({"day": "2026-11-22"},)


async def test_dag_run_create_is_idempotent_by_key(db):
    runs = set()
    for _ in range(2):
        cur = await db.execute(
            "SELECT sluice.dag_run_create('default', %s::jsonb, p_idempotency_key => 'k')",
            (DIAMOND,),
        )
        runs.add((await cur.fetchone())[0])
    assert len(runs) == 1
    cur = await db.execute("SELECT count(*) FROM sluice.jobs")
    assert await cur.fetchone() == (4,)


# -- races ------------------------------------------------------------------------------


async def wait_until_blocked(observer, pid):
    """Bounded wait until backend `pid` waits on a lock."""
    async with asyncio.timeout(10):
        while True:
            cur = await observer.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            )
            if (await cur.fetchone())[0] == "Lock":
                return
            await asyncio.sleep(0.001)


@pytest.mark.slow
async def test_two_parents_finishing_at_once_always_release_the_child(db, connect):
    """The concurrent-parents race, 500 times: each parent completes in its own
    transaction while the other is in flight. The child must end ready, never
    stay blocked, and nothing may deadlock."""
    rounds = 500
    parents: list[tuple[int, int, int]] = []
    await db.execute(
        "INSERT INTO sluice.jobs (task, queue) SELECT 'noop', 'race' FROM generate_series(1, %s)",
        (rounds * 3,),
    )
    cur = await db.execute("SELECT id FROM sluice.jobs ORDER BY id")
    ids = [r[0] for r in await cur.fetchall()]
    for i in range(rounds):
        parents.append(tuple(ids[3 * i : 3 * i + 3]))
    await db.execute(
        "INSERT INTO sluice.job_edges "
        "SELECT p, c FROM unnest(%s::bigint[], %s::bigint[]) AS e(p, c)",
        (
            [p for p1, p2, _ in parents for p in (p1, p2)],
            [c for _, _, c in parents for _ in (1, 2)],
        ),
    )
    cur = await db.execute(
        "SELECT id, attempt FROM sluice.job_claim(%s, '{race}', %s, '1 hour')", (WORKER, rounds * 2)
    )
    assert len(await cur.fetchall()) == rounds * 2

    one, two = await connect(), await connect()
    pid_two = two.info.backend_pid
    complete_sql = "SELECT sluice.job_complete_many(%s, %s, '{1}', '{null}'::jsonb[])"
    rng = random.Random(7)
    for p1, p2, _ in parents:
        first, second = (p1, p2) if rng.random() < 0.5 else (p2, p1)
        if rng.random() < 0.5:
            # Deterministic interleaving: the second waits on the child's row
            # lock while the first has not committed yet.
            async with one.transaction():
                await one.execute(complete_sql, (WORKER, [first]))
                pending = asyncio.ensure_future(_complete_in_transaction(two, complete_sql, second))
                await wait_until_blocked(db, pid_two)
            await pending
        else:
            # Free-for-all: both in flight, commits in whatever order.
            await asyncio.gather(
                _complete_in_transaction(one, complete_sql, first),
                _complete_in_transaction(two, complete_sql, second),
            )
    cur = await db.execute(
        "SELECT state::text, pending_parents, count(*) FROM sluice.jobs "
        "WHERE id = ANY(%s) GROUP BY 1, 2",
        ([c for _, _, c in parents],),
    )
    assert await cur.fetchall() == [("ready", 0, rounds)]


async def _complete_in_transaction(conn, sql, job_id):
    async with conn.transaction():
        await conn.execute(sql, (WORKER, [job_id]))


@pytest.mark.slow
async def test_parents_sharing_many_children_never_deadlock(db, connect):
    """Batches whose parents share children lock the children in id order, so
    concurrent completions cannot deadlock (the detector would raise)."""
    conns = [await connect() for _ in range(4)]
    sql = "SELECT sluice.job_complete_many(%s, %s, '{1}', '{null}'::jsonb[])"
    rng = random.Random(5)
    for _ in range(50):
        parents = [await insert_job(db, queue="shared") for _ in range(4)]
        children = [await insert_job(db) for _ in range(30)]
        rng.shuffle(children)
        await db.execute(
            "INSERT INTO sluice.job_edges "
            "SELECT p, c FROM unnest(%s::bigint[]) p, unnest(%s::bigint[]) c",
            (parents, children),
        )
        await db.execute("SELECT * FROM sluice.job_claim(%s, '{shared}', 10, '1 hour')", (WORKER,))
        await asyncio.gather(
            *(_complete_in_transaction(c, sql, p) for c, p in zip(conns, parents, strict=True))
        )
        cur = await db.execute(
            "SELECT count(*) FROM sluice.jobs WHERE id = ANY(%s) AND state = 'ready'", (children,)
        )
        assert await cur.fetchone() == (30,)


@pytest.mark.slow
async def test_a_runs_last_two_nodes_finishing_at_once_settle_the_run(db, connect):
    one, two = await connect(), await connect()
    definition = '{"nodes": [{"id": "x", "task": "noop"}, {"id": "y", "task": "noop"}]}'
    sql = "SELECT sluice.job_complete_many(%s, %s, '{1}', '{null}'::jsonb[])"
    for _ in range(100):
        run_id, nodes = await create_run(db, definition)
        for job in nodes.values():
            await claim(db, job)
        await asyncio.gather(
            _complete_in_transaction(one, sql, nodes["x"]),
            _complete_in_transaction(two, sql, nodes["y"]),
        )
        assert await run_state(db, run_id) == "succeeded"
