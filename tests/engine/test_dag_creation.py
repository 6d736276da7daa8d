"""Creating a DAG run writes each node once (perf-design.md D7.1):
`dag_run_create` inserts every node in its final state (`blocked` with its
parents counted, or `ready`), and the edge trigger, for the edges it inserts
itself, checks them (cycles included) without locking or counting again."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.engine.invariants import assert_invariants
from tests.engine.notifications import drain, listen, wait_on
from tests.factories import claim, complete, fail, fetch_job, rows, scalar

CREATE = "SELECT sluice.dag_run_create('default', %s::jsonb)"
# Rows inserted and updated in sluice.jobs, and edge turns taken, as counted by
# this backend and not yet flushed to the shared statistics. Nothing is flushed
# inside a transaction: the difference of two reads in one transaction is what
# it did in between.
WRITES = """
SELECT coalesce(sum(n_tup_ins) FILTER (WHERE p.relid IS NOT NULL), 0) AS inserted,
       coalesce(sum(n_tup_upd) FILTER (WHERE p.relid IS NOT NULL), 0) AS updated,
       coalesce(sum(n_tup_upd) FILTER (WHERE s.relname = 'job_edges_turn'), 0) AS turns
  FROM pg_stat_xact_user_tables s
  LEFT JOIN sluice.jobs_partitions() p(relid) ON p.relid = s.relid"""


def fan(width: int, root_queue: str = "default", queue: str = "default") -> str:
    middle = [f"m{i}" for i in range(width)]
    return json.dumps(
        {
            "nodes": [
                {"id": "root", "task": "noop", "queue": root_queue},
                *(
                    {"id": m, "task": "noop", "depends_on": ["root"], "queue": queue}
                    for m in middle
                ),
                {"id": "sink", "task": "noop", "depends_on": middle, "queue": queue},
            ]
        }
    )


async def nodes(db, run_id) -> dict[str, dict]:
    found = await rows(
        db,
        "SELECT node, id, state::text, pending_parents FROM sluice.jobs WHERE run_id = %s",
        run_id,
    )
    return {r["node"]: r for r in found}


async def test_a_created_run_writes_each_node_once(db):
    """No second version of any node, no edge turn: the run's own jobs are new."""
    width = 50
    async with db.transaction():
        before = (await rows(db, WRITES))[0]
        run_id = await scalar(db, CREATE, fan(width))
        after = (await rows(db, WRITES))[0]
    writes = {name: after[name] - before[name] for name in after}
    assert writes == {"inserted": width + 2, "updated": 0, "turns": 0}
    found = await nodes(db, run_id)
    assert (found["root"]["state"], found["root"]["pending_parents"]) == ("ready", 0)
    assert {(found[f"m{i}"]["state"], found[f"m{i}"]["pending_parents"]) for i in range(width)} == {
        ("blocked", 1)
    }
    assert (found["sink"]["state"], found["sink"]["pending_parents"]) == ("blocked", width)
    await assert_invariants(db)


async def test_parents_are_counted_once_whatever_the_node_order(db):
    """Children listed before their parents, a parent named twice: each node
    waits for its distinct parents, and the run still goes in order."""
    definition = json.dumps(
        {
            "nodes": [
                {"id": "d", "task": "noop", "depends_on": ["b", "c", "b"]},
                {"id": "c", "task": "noop", "depends_on": ["a"]},
                {"id": "b", "task": "noop", "depends_on": ["a", "a"]},
                {"id": "a", "task": "noop"},
            ]
        }
    )
    async with db.transaction():
        before = (await rows(db, WRITES))[0]
        run_id = await scalar(db, CREATE, definition)
        after = (await rows(db, WRITES))[0]
    assert after["updated"] == before["updated"]
    found = await nodes(db, run_id)
    assert {n: (r["state"], r["pending_parents"]) for n, r in found.items()} == {
        "a": ("ready", 0),
        "b": ("blocked", 1),
        "c": ("blocked", 1),
        "d": ("blocked", 2),
    }
    await assert_invariants(db)
    for step in ("a", "b", "c", "d"):
        ready = await rows(
            db, "SELECT node FROM sluice.jobs WHERE run_id = %s AND state = 'ready'", run_id
        )
        assert step in {r["node"] for r in ready}
        await claim(db, found[step]["id"])
        assert await complete(db, found[step]["id"])
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run_id)
        == "succeeded"
    )


async def refused_with_nothing_created(db, definition: str, constraint: str, message: str):
    """dag_run_create refuses `definition` naming `constraint`, and leaves no run or job."""
    with pytest.raises(psycopg.errors.CheckViolation) as error:
        await db.execute(CREATE, (definition,))
    assert error.value.diag.constraint_name == constraint
    assert message in str(error.value)
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs") == 0
    assert await scalar(db, "SELECT count(*) FROM sluice.dag_runs") == 0


@pytest.mark.parametrize(
    "edges",
    [
        {"a": ["b"], "b": ["a"]},
        {"a": ["c"], "b": ["a"], "c": ["b"]},
        {"r": [], "a": ["r", "c"], "b": ["a"], "c": ["b"]},  # below a root that is fine
    ],
    ids=["two", "three", "below-a-root"],
)
async def test_a_cyclic_definition_is_refused_and_nothing_is_created(db, edges):
    """dag_run_create is callable from SQL with any definition: the API sorts
    and validates, but the engine still refuses a cycle, as for any edge."""
    definition = json.dumps(
        {
            "nodes": [
                {"id": n, "task": "noop", "depends_on": parents} for n, parents in edges.items()
            ]
        }
    )
    await refused_with_nothing_created(db, definition, "job_edges_acyclic", "would close a cycle")


async def test_a_parent_that_is_no_node_is_refused_and_nothing_is_created(db):
    """The API refuses such a definition first; from SQL the parent was silently
    dropped, and the node ran without waiting for anything."""
    definition = json.dumps(
        {
            "nodes": [
                {"id": "a", "task": "noop"},
                {"id": "b", "task": "noop", "depends_on": ["a", "ghost"]},
            ]
        }
    )
    await refused_with_nothing_created(
        db, definition, "dag_runs_parents_known", "node b depends on ghost"
    )


@pytest.mark.parametrize(
    ("nodes", "constraint", "message"),
    [
        ({"a": 1}, "dag_runs_nodes_present", "at least one node"),
        ([], "dag_runs_nodes_present", "at least one node"),
        ([{"id": "a", "task": "noop"}, 2], "dag_runs_nodes_valid", "position 2 is not an object"),
        ([{"task": "noop"}], "dag_runs_nodes_valid", "position 1 has no id"),
        ([{"id": 1, "task": "noop"}], "dag_runs_nodes_valid", "position 1 has no id"),
        ([{"id": "a", "task": "noop"}, {"id": "a", "task": "noop"}], "dag_runs_nodes_valid",
         "node id a is used more than once"),
        ([{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": "a"}],
         "dag_runs_nodes_valid", "(b): depends_on must be a list of node ids"),
        ([{"id": "a", "task": "noop"}, {"id": "b", "task": "noop", "depends_on": [["a"]]}],
         "dag_runs_nodes_valid", "(b): depends_on must be a list of node ids"),
    ],
    ids=["nodes-object", "no-nodes", "node-number", "no-id", "id-number", "id-twice",
         "depends-string", "depends-nested"],
)  # fmt: skip
async def test_a_misshapen_definition_from_sql_is_refused_by_name(db, nodes, constraint, message):
    """The API validates definitions first; dag_run_create, callable from SQL,
    must not accept what it would misread (two jobs for one node, a nameless
    node) nor fail with an unnamed error."""
    await refused_with_nothing_created(db, json.dumps({"nodes": nodes}), constraint, message)


async def test_the_insert_settings_do_not_outlive_the_run_creation(db):
    """sluice.engine_insert and sluice.edges_counted are set back to off: later
    statements of the same transaction are checked and counted as usual."""
    async with db.transaction():
        await db.execute(CREATE, (fan(2),))
        assert await scalar(db, "SELECT current_setting('sluice.engine_insert', true)") == "off"
        assert await scalar(db, "SELECT current_setting('sluice.edges_counted', true)") == "off"
        with pytest.raises(psycopg.errors.CheckViolation) as error:
            async with db.transaction():
                await db.execute(
                    "INSERT INTO sluice.jobs (task, state, pending_parents)"
                    " VALUES ('noop', 'blocked', 1)"
                )
        assert error.value.diag.constraint_name == "jobs_inserted_pending"
        parent = await scalar(db, "INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id")
        child = await scalar(db, "INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id")
        await db.execute("INSERT INTO sluice.job_edges VALUES (%s, %s)", (parent, child))
        found = await rows(
            db, "SELECT state::text, pending_parents FROM sluice.jobs WHERE id = %s", child
        )
        assert found == [{"state": "blocked", "pending_parents": 1}]
    await assert_invariants(db)


async def test_roots_are_notified_and_blocked_nodes_are_not(db, connect):
    """The after-insert NOTIFY names the queues of ready nodes only; a blocked
    node's queue is notified when its parent releases it."""
    listener = await connect()
    await listen(listener, "sluice_jobs")
    await wait_on(db, "roots", "children")
    run_id = await scalar(db, CREATE, fan(3, root_queue="roots", queue="children"))
    assert await drain(listener, db, "sluice_jobs") == ["roots"]
    root = (await nodes(db, run_id))["root"]["id"]
    await claim(db, root)
    assert await complete(db, root)
    assert await drain(listener, db, "sluice_jobs") == ["children"]


async def test_claiming_nodes_of_a_new_run_reads_their_parents_by_id(db):
    """The claim gives each node its parents' results. Right after a run is
    created (no statistics yet, nodes blocked) the planner once hashed every
    DAG job of the table for each claimed node: the claim must read a few rows
    per node, whatever the run's size."""
    fetched = await rows_read_to_claim_100_nodes(db, width=3000)
    assert fetched < 100 * 10, f"{fetched} job rows read to claim 100 nodes"


async def test_claiming_nodes_reads_their_parents_by_id_under_stale_statistics(db):
    """Statistics of sluice.jobs_live taken while it held only plain jobs (no
    run_id) outlive those jobs: TRUNCATE, and ANALYZE of the emptied table, keep
    them. The planner then took the run_id index (every DAG job of the table, filtered on
    id) for each claimed node's parents: a fan-in of 10,000 ran 5-10x slower
    until autovacuum analyzed the table again, in the middle of a run or not
    (300,000 rows read here). What the claim itself reads under these
    statistics, one pass over the run's jobs per claim (3,200), is allowed."""
    await db.execute(
        "INSERT INTO sluice.jobs (task, payload) SELECT 'noop', '{}' FROM generate_series(1, 2000)"
    )
    await db.execute("ANALYZE sluice.jobs")
    await db.execute("TRUNCATE sluice.jobs CASCADE")
    width = 3000
    fetched = await rows_read_to_claim_100_nodes(db, width=width)
    assert fetched < 100 * 10 + 2 * width, f"{fetched} job rows read to claim 100 nodes"


async def rows_read_to_claim_100_nodes(db, *, width: int) -> int:
    """Create a fan of `width` nodes, run its root, and claim 100 nodes in one
    statement: the job rows that claim read (index fetches and scanned rows)."""
    run_id = await scalar(db, CREATE, fan(width))
    found = await nodes(db, run_id)
    await claim(db, found["root"]["id"])
    assert await complete(db, found["root"]["id"])
    read = (
        "SELECT sum(coalesce(idx_tup_fetch, 0) + seq_tup_read) FROM pg_stat_xact_user_tables"
        " WHERE relid IN (SELECT sluice.jobs_partitions())"
    )
    async with db.transaction():
        before = await scalar(db, read)
        claimed = await rows(
            db, "SELECT id FROM sluice.job_claim('w', '{default}', 100, '1 minute')"
        )
        fetched = await scalar(db, read) - before
    assert len(claimed) == 100
    return fetched


# Children listed before their parents, as a SQL caller may write them: the
# API sorts parents first, dag_run_create must not rely on it.
REVERSED_CHAIN = [
    {"id": "d", "task": "noop", "depends_on": ["c"], "trigger": "all_done"},
    {"id": "c", "task": "noop", "depends_on": ["b"], "trigger": "all_done"},
    {"id": "b", "task": "noop", "depends_on": ["a"]},
    {"id": "a", "task": "noop"},
]


async def test_ids_grow_along_every_edge_whatever_the_node_order(db):
    """The engine locks DAG jobs in rising id order on the assumption that ids
    grow along the edges (job_propagate); a run created from a definition
    listing children first must keep it."""
    definition = {
        "nodes": [
            *REVERSED_CHAIN,
            {"id": "x", "task": "noop", "depends_on": ["d", "a"]},
            {"id": "y", "task": "noop", "depends_on": ["x", "b"]},
        ]
    }
    run_id = await scalar(db, CREATE, json.dumps(definition))
    backwards = await rows(
        db,
        "SELECT p.node AS parent, c.node AS child FROM sluice.job_edges e"
        " JOIN sluice.jobs p ON p.id = e.parent_id JOIN sluice.jobs c ON c.id = e.child_id"
        " WHERE c.run_id = %s AND e.parent_id > e.child_id",
        run_id,
    )
    assert backwards == []
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE run_id = %s", run_id) == 6


async def test_a_failure_propagates_down_a_chain_listed_children_first(db):
    """a fails; b (all_success) is cancelled; c and d (all_done) run in turn."""
    run_id = await scalar(db, CREATE, json.dumps({"nodes": REVERSED_CHAIN}))
    found = await nodes(db, run_id)
    await claim(db, found["a"]["id"])
    await fail(db, found["a"]["id"], retryable=False)
    for step in ("c", "d"):
        assert (await fetch_job(db, found[step]["id"]))["state"] == "ready"
        await claim(db, found[step]["id"])
        assert await complete(db, found[step]["id"])
    states = {n: (await fetch_job(db, r["id"]))["state"] for n, r in found.items()}
    assert states == {"a": "failed", "b": "cancelled", "c": "succeeded", "d": "succeeded"}
    await assert_invariants(db)
