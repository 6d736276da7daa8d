"""DAG data flow in the engine (docs/dags.md): results rendered into children's
payloads, trigger rules and skips, conditions, map, waits and signals, run
timeout and concurrency, reruns, backfill, the result limit, the claim's
parents, and the views. The races are in test_dataflow_races.py."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.engine.dataflow import (
    OUTCOMES,
    RULES,
    expected_child,
    fail_for_good,
    finish,
    job,
    node,
    node_ids,
    start,
    states,
)
from tests.engine.invariants import assert_invariants
from tests.factories import WORKER, claim, rows, scalar

# -- templates ----------------------------------------------------------------------


async def test_a_child_renders_its_parents_results_when_it_becomes_ready(db):
    _run, ids = await start(
        db,
        [
            node("extract"),
            node(
                "load",
                ["extract"],
                payload={
                    "rows": "{{ nodes.extract.result.rows }}",
                    "path": "s3://{{ params.bucket }}/{{ nodes.extract.result.key }}",
                    "first": "{{ nodes.extract.result.rows[0].n }}",
                    "state": "{{ nodes.extract.state }}",
                },
            ),
        ],
        params={"bucket": "raw"},
    )
    assert (await job(db, ids["load"]))["payload"]["rows"] == "{{ nodes.extract.result.rows }}"
    await finish(db, ids["extract"], {"rows": [{"n": 1}, {"n": 2}], "key": "a.csv"})
    load = await job(db, ids["load"])
    assert load["state"] == "ready"
    assert load["payload"] == {
        "rows": [{"n": 1}, {"n": 2}],
        "path": "s3://raw/a.csv",
        "first": 1,
        "state": "succeeded",
    }
    await assert_invariants(db)


async def test_templates_over_params_only_are_rendered_at_creation_and_leave_no_flow(db):
    _run, ids = await start(
        db,
        [node("a"), node("b", ["a"], payload={"day": "{{ params.day }}", "n": "{{ params.n }}"})],
        params={"day": "2026-11-21", "n": 3},
    )
    b = await job(db, ids["b"])
    assert b["payload"] == {"day": "2026-11-21", "n": 3}
    assert b["flow"] is None  # a plain node: the release's fast path


async def test_definition_params_are_defaults_under_the_runs(db):
    defaults = {"day": "dflt", "n": 1}
    nodes = [node("a", payload={"d": "{{ params.day }}", "n": "{{ params.n }}"})]
    run = await scalar(
        db,
        "SELECT sluice.dag_run_create('default', %s, %s)",
        Jsonb({"nodes": nodes, "params": defaults}),
        Jsonb({"n": 2}),
    )
    assert await scalar(db, "SELECT payload FROM sluice.jobs WHERE run_id = %s", run) == {
        "d": "dflt",
        "n": 2,
    }
    assert await scalar(db, "SELECT params FROM sluice.dag_runs WHERE id = %s", run) == {
        "day": "dflt",
        "n": 2,
    }


async def test_a_missing_param_is_refused_when_the_run_is_created(db):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as error:
        await start(db, [node("a", payload={"url": "https://x/{{ params.day }}"})])
    assert error.value.diag.constraint_name == "template_renders"
    assert "node a" in str(error.value) and "params.day" in str(error.value)
    assert "payload.url" in str(error.value)
    assert await scalar(db, "SELECT count(*) FROM sluice.dag_runs") == 0
    # `| default(...)` makes it optional.
    await start(db, [node("a", payload={"d": '{{ params.day | default("today") }}'})])


async def test_a_template_that_cannot_be_rendered_fails_the_child_with_a_dead_letter(db):
    run, ids = await start(
        db,
        [
            node("a"),
            node("b", ["a"], payload={"f": "{{ nodes.a.result.files }}"}),
            node("c", ["b"]),
        ],
    )
    await finish(db, ids["a"], {"filez": []})
    b = await job(db, ids["b"])
    assert (b["state"], b["reason"]) == ("failed", "template_error")
    assert b["last_error"] == (
        "node b: template {{ nodes.a.result.files }} at payload.f:"
        ' nodes.a.result has no key "files"'
    )
    assert await states(db, run) == {"a": "succeeded", "b": "failed", "c": "cancelled"}
    letter = await rows(
        db, "SELECT reason, last_error FROM sluice.dead_letters WHERE job_id = %s", ids["b"]
    )
    assert letter == [{"reason": "template_error", "last_error": b["last_error"]}]
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run) == "failed"
    )
    # Retried, it renders again: a rerun of `a` first fixes the data.
    await db.execute("SELECT sluice.dag_run_rerun(%s, 'a')", (run,))
    await finish(db, ids["a"], {"files": ["x"]})
    assert (await job(db, ids["b"]))["payload"] == {"f": ["x"]}
    assert await states(db, run) == {"a": "succeeded", "b": "ready", "c": "blocked"}
    await assert_invariants(db)


# -- trigger rules and skips ----------------------------------------------------------


async def ended_parents(db, rule, outcome_a, outcome_b):
    """A run: roots ra, rb; parents a (under ra), b (under rb) that run only when
    their root's result says go; child c under `rule`. Each parent ends as asked."""
    run, ids = await start(
        db,
        [
            node("ra"),
            node("rb"),
            node("a", ["ra"], when="$.nodes.ra.result.go == true"),
            node("b", ["rb"], when="$.nodes.rb.result.go == true"),
            node("c", ["a", "b"], trigger=rule),
        ],
    )
    for parent, outcome in (("a", outcome_a), ("b", outcome_b)):
        await end_parent(db, ids, parent, outcome)
    return run, ids


async def end_parent(db, ids, parent, outcome):
    root = "r" + parent
    if outcome == "skipped":
        await finish(db, ids[root], {"go": False})
        return
    await finish(db, ids[root], {"go": True})
    if outcome == "succeeded":
        await finish(db, ids[parent])
    elif outcome == "failed":
        await fail_for_good(db, ids[parent])
    else:
        await db.execute("SELECT sluice.cancel_job(%s)", (ids[parent],))


@pytest.mark.parametrize("rule", RULES)
async def test_each_trigger_rule_decides_from_its_parents_outcomes(db, rule):
    for a in OUTCOMES:
        for b in OUTCOMES:
            _run, ids = await ended_parents(db, rule, a, b)
            child = await job(db, ids["c"])
            assert child["state"] == expected_child(rule, [a, b]), (rule, a, b, child["reason"])
            assert child["attempt"] == 0
    await assert_invariants(db)


async def test_one_success_starts_at_the_first_success_and_ignores_later_failures(db):
    run, ids = await start(
        db,
        [node("a"), node("b"), node("c", ["a", "b"], trigger="one_success"), node("d", ["c"])],
    )
    await finish(db, ids["a"])
    assert (await job(db, ids["c"]))["state"] == "ready"
    await fail_for_good(db, ids["b"])
    assert await states(db, run) == {"a": "succeeded", "b": "failed", "c": "ready", "d": "blocked"}
    await finish(db, ids["c"])
    assert (await job(db, ids["d"]))["state"] == "ready"
    await assert_invariants(db)


async def test_skips_propagate_by_the_rules_and_a_none_failed_join_runs(db):
    """check -> big (when rows > 1000) | small (the opposite) -> report (none_failed)."""
    run, ids = await start(
        db,
        [
            node("check"),
            node("big", ["check"], when="$.nodes.check.result.rows > 1000"),
            node("big_after", ["big"]),
            node("small", ["check"], when="$.nodes.check.result.rows <= 1000"),
            node("report", ["big_after", "small"], trigger="none_failed"),
            node("strict", ["big_after", "small"]),
        ],
    )
    await finish(db, ids["check"], {"rows": 12})
    assert await states(db, run) == {
        "check": "succeeded",
        "big": "skipped",
        "big_after": "skipped",
        "small": "ready",
        "report": "blocked",
        "strict": "skipped",
    }
    assert (await job(db, ids["big"]))["reason"] == "condition_false"
    assert (await job(db, ids["big_after"]))["reason"] == "upstream_skipped"
    await finish(db, ids["small"])
    assert (await job(db, ids["report"]))["state"] == "ready"
    await finish(db, ids["report"])
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run)
        == "succeeded"
    )
    await assert_invariants(db)


async def test_a_condition_that_is_neither_true_nor_false_fails_the_node(db):
    _run, ids = await start(db, [node("a"), node("b", ["a"], when="$.nodes.a.result.n > 3")])
    await finish(db, ids["a"], {"n": "three"})
    b = await job(db, ids["b"])
    assert (b["state"], b["reason"]) == ("failed", "when_unknown")
    assert "neither true nor false" in b["last_error"]


async def test_a_condition_over_params_decides_a_root_at_creation(db):
    run, _ids = await start(
        db,
        [node("a", when="$.params.deploy == true"), node("b", ["a"])],
        params={"deploy": False},
    )
    assert await states(db, run) == {"a": "skipped", "b": "skipped"}
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run)
        == "succeeded"
    )


async def test_a_bad_condition_is_refused_at_creation(db):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as error:
        await start(db, [node("a"), node("b", ["a"], when="$.nodes.a.result >")])
    assert "node b: when does not parse" in str(error.value)


# -- map --------------------------------------------------------------------------------


async def test_a_map_creates_one_element_per_item_and_the_join_gets_results_in_order(db):
    run, ids = await start(
        db,
        [
            node("split"),
            node(
                "parse",
                ["split"],
                map="{{ nodes.split.result.files }}",
                payload={"file": "{{ item }}", "n": "{{ index }}", "day": "{{ params.day }}"},
                queue="parse",
                max_attempts=2,
            ),
            node("merge", ["parse"], payload={"parts": "{{ nodes.parse.result }}"}),
        ],
        params={"day": "d1"},
    )
    await finish(db, ids["split"], {"files": ["a", "b", "c"]})
    elements = await rows(
        db,
        "SELECT id, map_index, state::text, payload, queue, max_attempts, node, run_id"
        " FROM sluice.jobs WHERE group_id = %s ORDER BY map_index",
        ids["parse"],
    )
    assert [e["payload"] for e in elements] == [
        {"file": "a", "n": 0, "day": "d1"},
        {"file": "b", "n": 1, "day": "d1"},
        {"file": "c", "n": 2, "day": "d1"},
    ]
    assert {
        (e["state"], e["queue"], e["max_attempts"], e["node"], e["run_id"]) for e in elements
    } == {("ready", "parse", 2, "parse", run)}
    parse = await job(db, ids["parse"])
    assert (parse["state"], parse["pending_parents"]) == ("waiting", 3)
    claimed = await rows(
        db, "SELECT id, map_index, parents FROM sluice.job_claim('w', '{parse}', 10, '1 hour')"
    )
    assert sorted((c["map_index"], c["parents"]) for c in claimed) == [
        (0, None),
        (1, None),
        (2, None),
    ]
    for e in reversed(elements):  # finish in reverse: the order is the list's, not the finish's
        await db.execute(
            "SELECT sluice.job_complete_many('w', %s, '{1}', %s::jsonb[])",
            ([e["id"]], [Jsonb({"n": e["map_index"]})]),
        )
    assert (await job(db, ids["parse"]))["result"] == [{"n": 0}, {"n": 1}, {"n": 2}]
    merge = await job(db, ids["merge"])
    assert merge["state"] == "ready"
    assert merge["payload"] == {"parts": [{"n": 0}, {"n": 1}, {"n": 2}]}
    progress = await rows(db, "SELECT nodes, elements, elements_done FROM sluice.dag_run_progress")
    assert progress == [{"nodes": 3, "elements": 3, "elements_done": 3}]
    await assert_invariants(db)


async def test_an_empty_map_succeeds_at_once_with_an_empty_list(db):
    _run, ids = await start(
        db,
        [
            node("split"),
            node("parse", ["split"], map="{{ nodes.split.result }}"),
            node("merge", ["parse"]),
        ],
    )
    await finish(db, ids["split"], [])
    parse = await job(db, ids["parse"])
    assert (parse["state"], parse["result"]) == ("succeeded", [])
    assert (await job(db, ids["merge"]))["state"] == "ready"


async def test_ten_thousand_elements_are_created_in_the_parents_completion(db):
    _run, ids = await start(
        db,
        [
            node("split"),
            node("parse", ["split"], map="{{ nodes.split.result }}", payload={"i": "{{ item }}"}),
        ],
    )
    await finish(db, ids["split"], list(range(10_000)))
    found = await rows(
        db,
        "SELECT count(*) AS n, min(map_index) AS lo, max(map_index) AS hi,"
        " bool_and((payload ->> 'i')::int = map_index) AS aligned,"
        " bool_and(state = 'ready') AS ready"
        " FROM sluice.jobs WHERE group_id = %s",
        ids["parse"],
    )
    assert found == [{"n": 10_000, "lo": 0, "hi": 9_999, "aligned": True, "ready": True}]


async def test_a_map_over_the_limit_or_not_a_list_fails_the_node(db):
    await db.execute("SET sluice.map_limit = 5")
    _run, ids = await start(
        db,
        [
            node("split"),
            node("big", ["split"], map="{{ nodes.split.result.items }}"),
            node("odd", ["split"], map="{{ nodes.split.result.one }}"),
            node("literal", map=[1, 2]),
        ],
    )
    await finish(db, ids["split"], {"items": list(range(6)), "one": {"a": 1}})
    big, odd = await job(db, ids["big"]), await job(db, ids["odd"])
    assert (big["state"], big["reason"]) == ("failed", "map_too_large")
    assert big["last_error"] == "node big: map of 6 elements, more than sluice.map_limit (5)"
    assert (odd["state"], odd["reason"]) == ("failed", "map_invalid")
    assert (
        odd["last_error"]
        == "node odd: map {{ nodes.split.result.one }} gives an object, not a list"
    )
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM sluice.jobs WHERE group_id IN (%s, %s)",
            ids["big"],
            ids["odd"],
        )
        == 0
    )
    # A literal list expands when the run is created.
    assert (await job(db, ids["literal"]))["state"] == "waiting"


async def test_a_failed_element_cancels_the_map_all_done_gets_nulls_and_a_retry_revives(
    db,
):
    _run, ids = await start(
        db,
        [
            node("parse", map=[1, 2, 3], max_attempts=1),
            node(
                "merge",
                ["parse"],
                trigger="all_done",
                payload={"parts": "{{ nodes.parse.result }}"},
            ),
            node("after", ["parse"]),
        ],
    )
    elements = {
        r["map_index"]: r["id"]
        for r in await rows(
            db, "SELECT id, map_index FROM sluice.jobs WHERE group_id = %s", ids["parse"]
        )
    }
    await finish(db, elements[0], "r0")
    await fail_for_good(db, elements[1])
    await finish(db, elements[2], "r2")
    parse = await job(db, ids["parse"])
    assert (parse["state"], parse["reason"], parse["result"]) == (
        "cancelled",
        "upstream_failed",
        ["r0", None, "r2"],
    )
    assert (await job(db, ids["merge"]))["payload"] == {"parts": ["r0", None, "r2"]}
    assert (await job(db, ids["after"]))["state"] == "cancelled"
    assert await scalar(db, "SELECT sluice.retry_dead(%s)", elements[1])
    parse = await job(db, ids["parse"])
    assert (parse["state"], parse["pending_parents"], parse["result"]) == ("waiting", 1, None)
    assert (await job(db, ids["after"]))["state"] == "blocked"
    await finish(db, elements[1], "r1")
    assert (await job(db, ids["parse"]))["result"] == ["r0", "r1", "r2"]
    assert (await job(db, ids["after"]))["state"] == "ready"
    await assert_invariants(db)


async def test_cancelling_a_mapped_node_cancels_its_elements(db):
    run, _ids = await start(db, [node("parse", map=[1, 2, 3]), node("merge", ["parse"])])
    await db.execute("SELECT sluice.dag_run_cancel(%s)", (run,))
    assert await rows(
        db, "SELECT DISTINCT state::text FROM sluice.jobs WHERE run_id = %s", run
    ) == [{"state": "cancelled"}]
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run)
        == "cancelled"
    )


# -- waits and signals --------------------------------------------------------------


async def test_a_duration_wait_holds_no_worker_and_wakes_when_due(db):
    run, ids = await start(
        db, [node("a"), node("cool", ["a"], wait={"for": 600}), node("b", ["cool"])]
    )
    await finish(db, ids["a"])
    cool = await job(db, ids["cool"])
    assert cool["state"] == "waiting"
    assert cool["task"] == "sluice.wait"
    assert (
        dt.timedelta(seconds=590) < cool["run_at"] - cool["created_at"] < dt.timedelta(seconds=700)
    )
    assert await scalar(db, "SELECT sluice.job_next_due()") <= cool["run_at"]
    assert await scalar(db, "SELECT sluice.job_wake_waiting()") == 0
    await db.execute(
        "UPDATE sluice.jobs SET run_at = now() - interval '1 second' WHERE id = %s", (ids["cool"],)
    )
    assert await scalar(db, "SELECT sluice.job_promote_scheduled()") == 1
    assert await states(db, run) == {"a": "succeeded", "cool": "succeeded", "b": "ready"}
    assert await rows(db, "SELECT kind FROM sluice.waiting_nodes") == []


async def test_a_signal_succeeds_its_node_with_the_payload(db):
    run, ids = await start(
        db,
        [
            node("approve", wait={"signal": True, "timeout": 3600, "on_timeout": "skip"}),
            node("deploy", ["approve"], payload={"by": "{{ nodes.approve.result.by }}"}),
        ],
    )
    waiting = await rows(
        db, "SELECT node, kind, wakes_at IS NOT NULL AS timed FROM sluice.waiting_nodes"
    )
    assert waiting == [{"node": "approve", "kind": "signal", "timed": True}]
    assert not await scalar(db, "SELECT sluice.signal(%s, 'deploy', '{}')", run)  # not waiting
    assert not await scalar(db, "SELECT sluice.signal(%s, 'nope')", run)
    assert await scalar(db, "SELECT sluice.signal(%s, 'approve', '{\"by\": \"ann\"}')", run)
    assert not await scalar(db, "SELECT sluice.signal(%s, 'approve', '{}')", run)  # only once
    assert (await job(db, ids["approve"]))["result"] == {"by": "ann"}
    deploy = await job(db, ids["deploy"])
    assert (deploy["state"], deploy["payload"]) == ("ready", {"by": "ann"})


@pytest.mark.parametrize("on_timeout", ["fail", "skip"])
async def test_a_signal_wait_past_its_timeout_fails_or_skips(db, on_timeout):
    run, ids = await start(
        db,
        [
            node("approve", wait={"signal": True, "timeout": 60, "on_timeout": on_timeout}),
            node("deploy", ["approve"]),
        ],
    )
    await db.execute(
        "UPDATE sluice.jobs SET run_at = now() - interval '1 second' WHERE id = %s",
        (ids["approve"],),
    )
    # Past its deadline, a signal is too late even before any sweep.
    assert not await scalar(db, "SELECT sluice.signal(%s, 'approve')", run)
    assert await scalar(db, "SELECT sluice.job_wake_waiting()") == 1
    approve = await job(db, ids["approve"])
    assert approve["reason"] == "wait_timeout"
    if on_timeout == "fail":
        assert await states(db, run) == {"approve": "failed", "deploy": "cancelled"}
        assert (
            await scalar(
                db, "SELECT reason FROM sluice.dead_letters WHERE job_id = %s", ids["approve"]
            )
            == "wait_timeout"
        )
    else:
        assert await states(db, run) == {"approve": "skipped", "deploy": "skipped"}


async def test_a_signal_wait_without_timeout_waits_for_ever(db):
    run, _ids = await start(db, [node("approve", wait={"signal": True})])
    assert await rows(db, "SELECT wakes_at FROM sluice.waiting_nodes") == [{"wakes_at": None}]
    assert await scalar(db, "SELECT sluice.job_wake_waiting()") == 0
    assert await scalar(db, "SELECT sluice.signal(%s, 'approve')", run)


async def test_a_signal_payload_over_the_result_limit_is_refused(db):
    await db.execute("SET sluice.max_result_bytes = 100")
    run, ids = await start(db, [node("approve", wait={"signal": True})])
    with pytest.raises(
        psycopg.errors.ProgramLimitExceeded, match=r"more than sluice\.max_result_bytes"
    ):
        await db.execute("SELECT sluice.signal(%s, 'approve', %s)", (run, Jsonb({"x": "y" * 200})))
    assert (await job(db, ids["approve"]))["state"] == "waiting"


# -- run timeout and concurrency ------------------------------------------------------


async def test_a_run_past_its_timeout_is_cancelled_and_fails(db):
    run, ids = await start(db, [node("a"), node("b", ["a"])], timeout=3600)
    deadline = await scalar(
        db, "SELECT deadline - started_at FROM sluice.dag_runs WHERE id = %s", run
    )
    assert deadline == dt.timedelta(hours=1)
    await claim(db, ids["a"])
    assert await scalar(db, "SELECT sluice.dag_run_expire()") == 0
    await db.execute(
        "UPDATE sluice.dag_runs SET deadline = now() - interval '1 second' WHERE id = %s", (run,)
    )
    assert await scalar(db, "SELECT sluice.dag_run_expire()") == 1
    assert await rows(db, "SELECT state::text, reason FROM sluice.dag_runs WHERE id = %s", run) == [
        {"state": "failed", "reason": "timeout"}
    ]
    assert {
        (r["state"], r["reason"])
        for r in await rows(
            db, "SELECT state::text, reason FROM sluice.jobs WHERE run_id = %s", run
        )
    } == {("cancelled", "run_timeout")}


async def test_a_queued_run_that_cannot_start_fails_and_lets_the_run_ahead_end(db):
    """A queued run's definition is only turned into jobs when it starts, inside the
    transaction that ends the run ahead of it. A definition SQL accepted but that
    cannot start (a cycle) fails its own run; the completion that freed the slot
    commits, and the next queued run starts."""
    plain = {"nodes": [node("a")], "concurrency": 1}
    cyclic = {"nodes": [node("x", ["y"]), node("y", ["x"])], "concurrency": 1}
    first, bad, after = [
        await scalar(db, "SELECT sluice.dag_run_create('default', %s)", Jsonb(d))
        for d in (plain, cyclic, plain)
    ]
    await finish(db, (await node_ids(db, first))["a"])
    states = await rows(db, "SELECT id, state::text, reason FROM sluice.dag_runs ORDER BY id")
    assert [(r["id"], r["state"]) for r in states] == [
        (first, "succeeded"),
        (bad, "failed"),
        (after, "running"),
    ]
    assert "cycle" in states[1]["reason"]
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE run_id = %s", bad) == 0
    await assert_invariants(db)


async def test_runs_over_the_dags_concurrency_queue_and_start_in_order(db):
    definition = {
        "nodes": [node("a")],
        "concurrency": 1,
        "concurrency_key": "{{ params.customer }}",
    }
    await db.execute(
        "INSERT INTO sluice.dags (name, version, definition) VALUES ('etl', 1, %s)",
        (Jsonb(definition),),
    )

    async def start_dag(customer):
        return await scalar(
            db, "SELECT sluice.dag_run_start('default', 'etl', %s)", Jsonb({"customer": customer})
        )

    first, second, third, _other = [await start_dag(c) for c in ("acme", "acme", "acme", "zeta")]
    run_states = await rows(
        db, "SELECT id, state::text, concurrency_key FROM sluice.dag_runs ORDER BY id"
    )
    assert [(r["state"], r["concurrency_key"]) for r in run_states] == [
        ("running", "acme"),
        ("queued", "acme"),
        ("queued", "acme"),
        ("running", "zeta"),
    ]
    assert await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE run_id = %s", second) == 0
    assert await scalar(db, "SELECT queue_position FROM sluice.api_runs WHERE id = %s", third) == 1
    await finish(db, (await node_ids(db, first))["a"])
    assert [
        r["state"] for r in await rows(db, "SELECT state::text FROM sluice.dag_runs ORDER BY id")
    ] == [
        "succeeded",
        "running",
        "queued",
        "running",
    ]
    # A queued run cancelled gives up its place; the next starts after the running one.
    assert await scalar(db, "SELECT sluice.dag_run_cancel(%s)", third) == 0
    await finish(db, (await node_ids(db, second))["a"])
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", third)
        == "cancelled"
    )


# -- rerun ------------------------------------------------------------------------------


async def test_a_rerun_runs_a_node_and_its_descendants_again_keeping_the_rest(db):
    run, ids = await start(
        db,
        [
            node("a"),
            node("b", ["a"], payload={"v": "{{ nodes.a.result }}"}, max_attempts=2),
            node("c", ["b"]),
            node("side", ["a"]),
        ],
    )
    await finish(db, ids["a"], 1)
    await finish(db, ids["b"], "b1")
    await finish(db, ids["c"], "c1")
    await finish(db, ids["side"], "s1")
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run)
        == "succeeded"
    )
    assert await scalar(db, "SELECT sluice.dag_run_rerun(%s, 'b')", run) == 2
    b = await job(db, ids["b"])
    assert (b["state"], b["result"], b["payload"], b["attempt"], b["max_attempts"]) == (
        "ready",
        None,
        {"v": 1},
        1,
        3,
    )
    assert await states(db, run) == {
        "a": "succeeded",
        "b": "ready",
        "c": "blocked",
        "side": "succeeded",
    }
    assert (await job(db, ids["side"]))["result"] == "s1"
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run) == "running"
    )
    await finish(db, ids["b"], "b2")
    await finish(db, ids["c"])
    assert (
        await scalar(db, "SELECT state::text FROM sluice.dag_runs WHERE id = %s", run)
        == "succeeded"
    )
    assert (
        await scalar(db, "SELECT count(*) FROM sluice.job_attempts WHERE job_id = %s", ids["b"])
        == 2
    )
    await assert_invariants(db)


async def test_a_rerun_of_a_map_maps_again_over_what_its_parent_gives_now(db):
    run, ids = await start(
        db,
        [
            node("split"),
            node("parse", ["split"], map="{{ nodes.split.result }}"),
            node("merge", ["parse"]),
        ],
    )
    await finish(db, ids["split"], [1, 2])
    await db.execute("SELECT sluice.dag_run_rerun(%s, 'split')", (run,))
    assert (
        await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE group_id = %s", ids["parse"]) == 0
    )
    await finish(db, ids["split"], [1, 2, 3])
    assert (
        await scalar(db, "SELECT count(*) FROM sluice.jobs WHERE group_id = %s", ids["parse"]) == 3
    )


async def test_a_rerun_is_refused_while_a_node_in_it_runs(db):
    run, ids = await start(db, [node("a"), node("b", ["a"]), node("c")])
    await finish(db, ids["a"])
    await claim(db, ids["b"])
    with pytest.raises(psycopg.errors.ObjectInUse, match="b is running"):
        await db.execute("SELECT sluice.dag_run_rerun(%s, 'a')", (run,))
    with pytest.raises(psycopg.errors.NoDataFound, match="has no node nope"):
        await db.execute("SELECT sluice.dag_run_rerun(%s, 'nope')", (run,))


# -- backfill ---------------------------------------------------------------------------


async def test_a_backfill_starts_one_run_per_occurrence_once(db):
    await db.execute(
        "INSERT INTO sluice.dags (name, version, definition) VALUES ('etl', 1, %s)",
        (
            Jsonb(
                {
                    "nodes": [
                        node("a", payload={"at": "{{ run.occurrence }}", "day": "{{ params.day }}"})
                    ]
                }
            ),
        ),
    )
    sid = await scalar(
        db,
        "INSERT INTO sluice.schedules (name, cron, dag_name, dag_params)"
        " VALUES ('nightly', '0 3 * * *', 'etl', '{\"day\": \"x\"}') RETURNING id",
    )
    days = [dt.datetime(2026, 1, d, 3, tzinfo=dt.UTC) for d in (1, 2)]
    first = await rows(db, "SELECT * FROM sluice.dag_run_backfill(%s, %s)", sid, days)
    assert [r["created"] for r in first] == [True, True]
    again = await rows(db, "SELECT * FROM sluice.dag_run_backfill(%s, %s)", sid, days)
    assert [(r["run_id"], r["created"]) for r in again] == [(r["run_id"], False) for r in first]
    payloads = await rows(db, "SELECT payload FROM sluice.jobs ORDER BY id")
    assert payloads == [
        {"payload": {"at": "2026-01-01T03:00:00Z", "day": "x"}},
        {"payload": {"at": "2026-01-02T03:00:00Z", "day": "x"}},
    ]
    # The scheduler firing the same occurrence finds the backfilled run.
    seen = await scalar(db, "SELECT updated_at FROM sluice.schedules WHERE id = %s", sid)
    await db.execute("SELECT sluice.schedule_fire(%s, %s, %s, %s)", (sid, seen, days[:1], days[1]))
    assert await scalar(db, "SELECT count(*) FROM sluice.dag_runs") == 2


# -- results and the claim ------------------------------------------------------------


async def test_a_result_over_the_limit_fails_the_job_without_retry(db):
    await db.execute("SET sluice.max_result_bytes = 2000")
    big = await scalar(db, "INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id")
    small = await scalar(db, "INSERT INTO sluice.jobs (task) VALUES ('noop') RETURNING id")
    await db.execute("SELECT * FROM sluice.job_claim(%s, '{default}', 10, '1 hour')", (WORKER,))
    done = await rows(
        db,
        "SELECT * FROM sluice.job_complete_many(%s, %s, '{1,1}', %s::jsonb[]) AS id",
        WORKER,
        [big, small],
        [Jsonb({"x": "y" * 3000}), Jsonb({"ok": True})],
    )
    assert done == [{"id": small}]
    failed = await job(db, big)
    assert (failed["state"], failed["reason"], failed["result"]) == (
        "failed",
        "result_too_large",
        None,
    )
    assert "exceeds the limit of 2000 bytes (sluice.max_result_bytes)" in failed["last_error"]
    assert (
        await scalar(db, "SELECT reason FROM sluice.dead_letters WHERE job_id = %s", big)
        == "result_too_large"
    )


async def test_a_claim_carries_the_parents_results_only_for_dag_nodes(db):
    plain = await scalar(
        db, "INSERT INTO sluice.jobs (task, queue) VALUES ('noop', 'p') RETURNING id"
    )
    _run, ids = await start(db, [node("a"), node("b"), node("c", ["a", "b"], queue="c")])
    await finish(db, ids["a"], {"n": 1})
    await finish(db, ids["b"], [2])
    claimed = await rows(db, "SELECT id, parents FROM sluice.job_claim('w', '{p,c}', 10, '1 hour')")
    assert {c["id"]: c["parents"] for c in claimed} == {
        plain: None,
        ids["c"]: {"a": {"n": 1}, "b": [2]},
    }
    assert await scalar(db, "SELECT sluice.job_parent_results(%s, 10)", ids["c"]) == {
        "_omitted": True
    }


async def test_the_views_count_skipped_and_waiting_nodes(db):
    _run, _ids = await start(
        db,
        [node("a", when="$.params.go == true"), node("w", wait={"signal": True}), node("b", ["w"])],
        params={"go": False},
    )
    progress = await rows(
        db, "SELECT nodes, skipped, waiting, blocked, percent_done FROM sluice.dag_run_progress"
    )
    assert progress == [
        {"nodes": 3, "skipped": 1, "waiting": 1, "blocked": 1, "percent_done": Decimal("33.3")}
    ]
    stats = await rows(
        db, "SELECT skipped, waiting FROM sluice.queue_stats WHERE queue = 'default'"
    )
    assert stats == [{"skipped": 1, "waiting": 1}]
