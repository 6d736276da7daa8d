"""Races of DAG data flow, attacked with real concurrent transactions.

Each race runs many rounds with two transactions released together by a
barrier, and once as a deterministic interleaving with one transaction held
open across the other. docs/state-machine.md argues why they hold:
  * the last two elements of a map finishing at once release the join once;
  * a join whose parents end at once, in any two states, is decided once and
    as its trigger rule says, under each rule;
  * a signal racing its timeout has exactly one winner;
  * a rerun racing the completion of a node in it either resets the finished
    node or is refused, never strands or duplicates it;
  * two runs created at once for a DAG's last concurrency slot: one starts.
"""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.engine.dataflow import (
    OUTCOMES,
    RULES,
    expected_child,
    job,
    node,
    node_ids,
    possible_children,
    start,
    states,
)
from tests.engine.invariants import assert_invariants
from tests.engine.test_races import in_transaction, together, waits_on_a_lock
from tests.factories import WORKER, rows, scalar
from tests.worker.helpers import wait_for

ROUNDS = 200
COMPLETE = "SELECT sluice.job_complete_many(%s, %s, %s, %s::jsonb[])"


async def claim_queue(conn, queue, limit=100_000):
    """Claim every ready job of `queue`: {id: attempt}."""
    claimed = await rows(
        conn,
        "SELECT id, attempt FROM sluice.job_claim(%s, %s, %s, '1 hour')",
        WORKER,
        [queue],
        limit,
    )
    return {c["id"]: c["attempt"] for c in claimed}


def complete(job_id, result=None):
    return (COMPLETE, (WORKER, [job_id], [1], [Jsonb(result)]))


# -- 1. the last two elements of a map ------------------------------------------------


async def maps(conn, rounds):
    """Per round a run: `parse` maps over 2..50 items (queue race-map), `merge`
    gathers them. Every element but the last two is completed."""
    runs = []
    for n in range(rounds):
        size = 2 + n % 49
        run, ids = await start(
            conn,
            [
                node("parse", map=list(range(size)), queue="race-map"),
                node(
                    "merge",
                    ["parse"],
                    queue="race-join",
                    payload={"parts": "{{ nodes.parse.result }}"},
                ),
            ],
        )
        elements = [
            r["id"]
            for r in await rows(
                conn,
                "SELECT id FROM sluice.jobs WHERE group_id = %s ORDER BY map_index",
                ids["parse"],
            )
        ]
        runs.append((run, ids, elements))
    claimed = await claim_queue(conn, "race-map")
    early = [e for _, _, elements in runs for e in elements[:-2]]
    assert set(early) < set(claimed)
    await conn.execute(
        COMPLETE,
        (WORKER, early, [1] * len(early), [Jsonb(f"r{e}") for e in early]),
    )
    return runs


async def assert_map_joined(conn, ids, elements):
    parse, merge = await job(conn, ids["parse"]), await job(conn, ids["merge"])
    results = [f"r{e}" for e in elements]
    assert (parse["state"], parse["pending_parents"], parse["result"]) == ("succeeded", 0, results)
    assert (merge["state"], merge["attempt"], merge["payload"]) == ("ready", 0, {"parts": results})


@pytest.mark.slow
@pytest.mark.timeout(600)  # 75 s on a loaded 2-core machine
async def test_the_last_two_elements_of_a_map_finishing_at_once_release_the_join_once(db, connect):
    one, two = await connect(), await connect()
    for run, ids, elements in await maps(db, ROUNDS):
        *_, e1, e2 = elements
        errors = await together(
            in_transaction(one, complete(e1, f"r{e1}")), in_transaction(two, complete(e2, f"r{e2}"))
        )
        assert errors == [None, None], f"run {run}: {errors}"
        await assert_map_joined(db, ids, elements)
    assert (
        await scalar(
            db, "SELECT count(*) FROM sluice.jobs WHERE queue = 'race-join' AND state = 'ready'"
        )
        == ROUNDS
    )
    await assert_invariants(db)


async def test_an_element_completion_waits_for_an_open_one_then_sees_its_count(db, connect):
    [(_run, ids, elements)] = await maps(db, 1)
    *_, e1, e2 = elements
    one, two = await connect(), await connect()
    async with one.transaction():
        await one.execute(*complete(e1, f"r{e1}"))
        other = asyncio.ensure_future(in_transaction(two, complete(e2, f"r{e2}")))
        assert await waits_on_a_lock(db, two.info.backend_pid, other), "e2 did not wait"
        assert (await job(db, ids["parse"]))["pending_parents"] == 2  # nothing committed yet
    await other
    await assert_map_joined(db, ids, elements)
    await assert_invariants(db)


# -- 2. a join whose parents end at once, under each rule ------------------------------


async def joins(conn, rule, pairs):
    """Per pair of outcomes a run: roots ra, rb; parents a under ra, b under rb,
    each running only when its root's result says go; child c under `rule`.
    Everything is done but each parent's last step: completing, failing or
    cancelling the running parent, or (to skip it) completing its root."""
    runs = []
    for pair in pairs:
        run, ids = await start(
            conn,
            [
                node("ra", queue="race-r"),
                node("rb", queue="race-r"),
                node(
                    "a", ["ra"], when="$.nodes.ra.result.go == true", queue="race-p", max_attempts=1
                ),
                node(
                    "b", ["rb"], when="$.nodes.rb.result.go == true", queue="race-p", max_attempts=1
                ),
                node("c", ["a", "b"], trigger=rule, queue="race-c"),
            ],
        )
        runs.append((run, ids, pair))
    await claim_queue(conn, "race-r")
    going = [
        ids["r" + p]
        for _, ids, pair in runs
        for p, outcome in zip("ab", pair, strict=True)
        if outcome != "skipped"
    ]
    await conn.execute(
        COMPLETE, (WORKER, going, [1] * len(going), [Jsonb({"go": True})] * len(going))
    )
    await claim_queue(conn, "race-p")
    return runs


def last_step(ids, parent, outcome):
    if outcome == "skipped":
        return complete(ids["r" + parent], {"go": False})
    if outcome == "succeeded":
        return complete(ids[parent], parent)
    if outcome == "failed":
        return (
            "SELECT * FROM sluice.job_fail_many(%s, %s, '{1}', '{boom}', '{false}')",
            (WORKER, [ids[parent]]),
        )
    return ("SELECT sluice.job_cancel(%s)", ([ids[parent]],))


@pytest.mark.slow
@pytest.mark.parametrize("rule", RULES)
async def test_a_join_whose_parents_end_at_once_is_decided_once_by_its_rule(db, connect, rule):
    pairs = [(a, b) for a in OUTCOMES for b in OUTCOMES] * 13  # 208 rounds
    one, two = await connect(), await connect()
    for run, ids, (a, b) in await joins(db, rule, pairs):
        errors = await together(
            in_transaction(one, last_step(ids, "a", a)), in_transaction(two, last_step(ids, "b", b))
        )
        assert errors == [None, None], f"run {run} {a}/{b}: {errors}"
        found = await states(db, run)
        assert (found["a"], found["b"]) == (a, b), f"run {run}"
        child = await job(db, ids["c"])
        assert child["state"] in possible_children(rule, [a, b]), f"run {run} {a}/{b}: {child}"
        assert child["attempt"] == 0
    await assert_invariants(db)


@pytest.mark.parametrize("rule", RULES)
async def test_a_join_waits_for_a_parent_held_open_then_decides_from_both(db, connect, rule):
    """a ends (failed) in a transaction held open; b's success must wait for the
    child's lock, and then decide with a's outcome counted."""
    [(_run, ids, _)] = await joins(db, rule, [("failed", "succeeded")])
    one, two = await connect(), await connect()
    async with one.transaction():
        await one.execute(*last_step(ids, "a", "failed"))
        other = asyncio.ensure_future(in_transaction(two, last_step(ids, "b", "succeeded")))
        assert await waits_on_a_lock(db, two.info.backend_pid, other), "b did not wait for c"
    await other
    assert (await job(db, ids["c"]))["state"] == expected_child(rule, ["failed", "succeeded"])
    await assert_invariants(db)


@pytest.mark.slow
async def test_one_success_among_three_parents_ending_at_once_starts_the_child_once(db, connect):
    """Two parents fail and the third succeeds, all at once: the child runs."""
    runs = []
    for _ in range(ROUNDS // 2):
        runs.append(
            await start(
                db,
                [
                    node("a", queue="race-p", max_attempts=1),
                    node("b", queue="race-p", max_attempts=1),
                    node("s", queue="race-p"),
                    node("c", ["a", "b", "s"], trigger="one_success", queue="race-c"),
                ],
            )
        )
    await claim_queue(db, "race-p")
    conns = [await connect() for _ in range(3)]
    fail = "SELECT * FROM sluice.job_fail_many(%s, %s, '{1}', '{boom}', '{false}')"
    for run, ids in runs:
        errors = await together(
            in_transaction(conns[0], (fail, (WORKER, [ids["a"]]))),
            in_transaction(conns[1], (fail, (WORKER, [ids["b"]]))),
            in_transaction(conns[2], complete(ids["s"])),
        )
        assert errors == [None, None, None]
        child = await job(db, ids["c"])
        assert (child["state"], child["pending_parents"]) == ("ready", 0), f"run {run}"
    await assert_invariants(db)


# -- 3. a signal racing its timeout ----------------------------------------------------


async def approvals(conn, rounds):
    runs = []
    for n in range(rounds):
        on_timeout = "skip" if n % 2 else "fail"
        runs.append(
            (
                *await start(
                    conn,
                    [
                        node(
                            "approve",
                            wait={"signal": True, "timeout": 3600, "on_timeout": on_timeout},
                        ),
                        node(
                            "deploy", ["approve"], payload={"by": "{{ nodes.approve.result.by }}"}
                        ),
                    ],
                ),
                on_timeout,
            )
        )
    return runs


async def set_deadline(conn, job_id, ms):
    await conn.execute(
        "UPDATE sluice.jobs SET run_at = clock_timestamp() + make_interval(secs => %s / 1000.0)"
        " WHERE id = %s",
        (ms, job_id),
    )


async def assert_one_outcome(conn, run, ids, on_timeout, signalled):
    approve, deploy = await job(conn, ids["approve"]), await job(conn, ids["deploy"])
    if signalled:
        assert (approve["state"], approve["result"]) == ("succeeded", {"by": run}), f"run {run}"
        assert (deploy["state"], deploy["payload"]) == ("ready", {"by": run})
    else:
        timed_out = "skipped" if on_timeout == "skip" else "failed"
        assert (approve["state"], approve["reason"]) == (timed_out, "wait_timeout"), f"run {run}"
        assert deploy["state"] == ("skipped" if on_timeout == "skip" else "cancelled")


@pytest.mark.slow
async def test_a_signal_racing_its_timeout_has_one_winner(db, connect):
    one, two = await connect(), await connect()
    rng = random.Random(12)
    for run, ids, on_timeout in await approvals(db, ROUNDS):
        # The deadline falls about when both are released: either may win.
        await set_deadline(db, ids["approve"], rng.uniform(0, 6))
        await asyncio.sleep(rng.uniform(0, 0.006))
        signalled = []

        async def signal(run=run, signalled=signalled):
            cur = await one.execute(
                "SELECT sluice.signal(%s, 'approve', %s)", (run, Jsonb({"by": run}))
            )
            signalled.append((await cur.fetchone())[0])

        errors = await together(
            signal(), in_transaction(two, ("SELECT sluice.job_wake_waiting()", None))
        )
        assert errors == [None, None]
        await asyncio.sleep(0.008)  # past the deadline: a sweep that missed it now takes it
        await db.execute("SELECT sluice.job_wake_waiting()")
        await assert_one_outcome(db, run, ids, on_timeout, signalled[0])
    await assert_invariants(db)


async def test_a_signal_in_flight_waits_for_a_sweep_holding_the_node_and_finds_it_decided(
    db, connect
):
    """The signal's statement starts before the deadline; the sweep's transaction
    holds the node (it takes it, moves the deadline to the past, and times it out)
    before the signal reaches it: the signal waits, re-checks, and changes nothing."""
    [(run, ids, on_timeout)] = await approvals(db, 1)
    sweeper, signaller = await connect(), await connect()
    async with sweeper.transaction():
        await sweeper.execute(
            "UPDATE sluice.jobs SET run_at = now() - interval '1 second' WHERE id = %s",
            (ids["approve"],),
        )
        task = asyncio.ensure_future(
            scalar(signaller, "SELECT sluice.signal(%s, 'approve', %s)", run, Jsonb({"by": run}))
        )
        assert await waits_on_a_lock(db, signaller.info.backend_pid, task)
        assert await scalar(sweeper, "SELECT sluice.job_wake_waiting()") == 1
        # The deadline back ahead: only the node's state can refuse the signal now.
        await sweeper.execute(
            "UPDATE sluice.jobs SET run_at = now() + interval '1 hour' WHERE id = %s",
            (ids["approve"],),
        )
    assert await task is False
    await assert_one_outcome(db, run, ids, on_timeout, False)


async def test_a_signal_after_the_deadline_is_refused_without_waiting_for_a_sweep(db, connect):
    [(run, ids, on_timeout)] = await approvals(db, 1)
    await set_deadline(db, ids["approve"], -1)
    sweeper = await connect()
    async with sweeper.transaction():
        assert await scalar(sweeper, "SELECT sluice.job_wake_waiting()") == 1
        assert await scalar(db, "SELECT sluice.signal(%s, 'approve')", run) is False
    await assert_one_outcome(db, run, ids, on_timeout, False)


async def test_a_sweep_passes_over_a_node_a_signal_holds(db, connect):
    [(run, ids, on_timeout)] = await approvals(db, 1)
    signaller, sweeper = await connect(), await connect()
    # Connected first, and a second's margin: the signal must come before the deadline
    # (200 ms, two connections included, was not always enough on a loaded machine).
    await set_deadline(db, ids["approve"], 1000)
    async with signaller.transaction():
        assert await scalar(
            signaller, "SELECT sluice.signal(%s, 'approve', %s)", run, Jsonb({"by": run})
        )
        past = "SELECT clock_timestamp() > run_at FROM sluice.jobs WHERE id = %s"
        await wait_for(lambda: scalar(db, past, ids["approve"]), what="the deadline to pass")
        assert await scalar(sweeper, "SELECT sluice.job_wake_waiting()") == 0
    assert await scalar(sweeper, "SELECT sluice.job_wake_waiting()") == 0
    await assert_one_outcome(db, run, ids, on_timeout, True)


# -- 4. a rerun racing a running node ---------------------------------------------------


async def reruns(conn, rounds):
    """Per round: x (succeeded) -> y (running, queue race-y) -> z."""
    runs = []
    for _ in range(rounds):
        runs.append(
            await start(
                conn,
                [node("x", queue="race-x"), node("y", ["x"], queue="race-y"), node("z", ["y"])],
            )
        )
    xs = await claim_queue(conn, "race-x")
    await conn.execute(COMPLETE, (WORKER, list(xs), [1] * len(xs), [Jsonb("x")] * len(xs)))
    assert len(await claim_queue(conn, "race-y")) == rounds
    return runs


async def assert_rerun_or_refused(conn, run, ids, error):
    found = await states(conn, run)
    y = await job(conn, ids["y"])
    logged = await rows(
        conn, "SELECT attempt, outcome FROM sluice.job_attempts WHERE job_id = %s", ids["y"]
    )
    assert logged == [{"attempt": 1, "outcome": "succeeded"}], f"run {run}"
    if error is None:  # the rerun came after the completion and reset it
        assert found == {"x": "ready", "y": "blocked", "z": "blocked"}, f"run {run}"
        assert (y["attempt"], y["result"], y["worker_id"]) == (1, None, None)
    else:
        assert isinstance(error, psycopg.errors.ObjectInUse), error
        assert found == {"x": "succeeded", "y": "succeeded", "z": "ready"}, f"run {run}"


@pytest.mark.slow
async def test_a_rerun_racing_a_completion_resets_it_or_is_refused(db, connect):
    one, two = await connect(), await connect()
    for run, ids in await reruns(db, ROUNDS):
        errors = await together(
            in_transaction(one, complete(ids["y"], "y")),
            in_transaction(two, ("SELECT sluice.dag_run_rerun(%s, 'x')", (run,))),
        )
        assert errors[0] is None
        await assert_rerun_or_refused(db, run, ids, errors[1])
    await assert_invariants(db)


async def test_a_rerun_waits_for_a_completion_held_open_then_resets_the_node(db, connect):
    [(run, ids)] = await reruns(db, 1)
    one, two = await connect(), await connect()
    async with one.transaction():
        await one.execute(*complete(ids["y"], "y"))
        task = asyncio.ensure_future(
            in_transaction(two, ("SELECT sluice.dag_run_rerun(%s, 'x')", (run,)))
        )
        assert await waits_on_a_lock(db, two.info.backend_pid, task)
    await task
    await assert_rerun_or_refused(db, run, ids, None)
    await assert_invariants(db)


# -- 5. the last concurrency slot ----------------------------------------------------


@pytest.mark.slow
async def test_two_runs_created_at_once_for_the_last_slot_start_one(db, connect):
    one, two = await connect(), await connect()
    for n in range(ROUNDS // 2):
        definition = Jsonb({"nodes": [node("a", queue="race-slot")], "concurrency": 1})
        await db.execute(
            "INSERT INTO sluice.dags (name, version, definition) VALUES (%s, 1, %s)",
            (f"slot{n}", definition),
        )
        create = ("SELECT sluice.dag_run_start('default', %s)", (f"slot{n}",))
        errors = await together(in_transaction(one, create), in_transaction(two, create))
        assert errors == [None, None]
        found = await rows(
            db,
            "SELECT id, state::text FROM sluice.dag_runs WHERE dag_name = %s ORDER BY id",
            f"slot{n}",
        )
        assert [r["state"] for r in found] == ["running", "queued"], found
        running = found[0]["id"]
        claimed = await claim_queue(db, "race-slot")
        assert list(claimed) == [(await node_ids(db, running))["a"]]
        await db.execute(*complete(next(iter(claimed))))
        assert [
            r["state"]
            for r in await rows(
                db,
                "SELECT state::text FROM sluice.dag_runs WHERE dag_name = %s ORDER BY id",
                f"slot{n}",
            )
        ] == ["succeeded", "running"]
        await db.execute("SELECT sluice.dag_run_cancel(%s)", (found[1]["id"],))
    await assert_invariants(db)
