"""The data language of DAG nodes (sql/schema/25_templates.sql): payload
templates rendered against a context, `when` conditions, and the check of a
definition's data flow. Pure SQL functions, so everything here is one query."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from sluice.core.db import connection_kwargs
from tests.conftest import _janitor
from tests.factories import rows, scalar

CONTEXT = {
    "params": {"day": "2026-11-21", "n": 3, "flag": True, "cfg": {"a": [1, 2]}, "nothing": None},
    "nodes": {
        "split": {"state": "succeeded", "result": {"files": ["a.csv", "b.csv"], "rows": 2}},
        "load-data": {"state": "succeeded", "result": [10, 20, 30]},
        "my.node": {"state": "succeeded", "result": {"k.y": "dotted", 'q"b': "quoted"}},
        "skipped": {"state": "skipped", "result": None},
    },
    "run": {"id": 7, "occurrence": "2026-11-21T00:00:00Z"},
}


@pytest.fixture(scope="module")
def shared_database(pg_server, template_db) -> Iterator[str]:
    """One database for the module, cloned once: these functions read no table
    and write nothing, and a clone per test took most of the module's time."""
    name = f"templates_{os.getpid()}"
    with _janitor(pg_server, name, template_dbname=template_db):
        yield pg_server.url(name)


@pytest.fixture
async def db(shared_database) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(
        shared_database, **connection_kwargs()
    ) as conn:
        yield conn


async def render(db, payload: Any, context: Any = CONTEXT, node: str | None = None) -> Any:
    return await scalar(
        db,
        "SELECT sluice.template_render(%s, %s, %s)",
        Jsonb(payload),
        Jsonb(context),
        node,
    )


async def render_error(db, payload: Any, context: Any = CONTEXT, node: str | None = None) -> str:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        await render(db, payload, context, node)
    assert caught.value.diag.constraint_name == "template_renders"
    return caught.value.diag.message_primary or ""


async def named_rows(conn, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def apply(db, payload: Any, context: Any = CONTEXT, item: Any = None, index=None):
    [row] = await rows(
        db,
        "SELECT r.payload, r.error FROM sluice.template_apply("
        "%s, sluice.template_compile(%s), %s, %s, %s) AS r",
        Jsonb(payload),
        Jsonb(payload),
        Jsonb(context),
        None if item is None else Jsonb(item),
        index,
    )
    return row["payload"], row["error"]


# Rendering


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{{ nodes.split.result.files }}", ["a.csv", "b.csv"]),
        ("{{ nodes.split.result.rows }}", 2),
        ("{{ nodes.split.result }}", {"files": ["a.csv", "b.csv"], "rows": 2}),
        ("{{ nodes.split.state }}", "succeeded"),
        ("{{ params.flag }}", True),
        ("{{ params.nothing }}", None),
        ("{{ params.cfg.a[1] }}", 2),
        ("{{ nodes.split.result.files[0] }}", "a.csv"),
        ("{{ nodes.split.result.files[-1] }}", "b.csv"),
        ("{{ nodes.split.result.files.1 }}", "b.csv"),
        ("{{ nodes.load-data.result[2] }}", 30),
        ('{{ nodes["my.node"].result["k.y"] }}', "dotted"),
        ("{{ nodes['my.node'].result['k.y'] }}", "dotted"),
        ('{{ nodes["my.node"].result["q\\"b"] }}', "quoted"),
        ("{{run.id}}", 7),
        ("{{\n  params.n\t}}", 3),
    ],
)
async def test_a_string_that_is_one_template_keeps_the_type_of_its_value(db, template, value):
    assert await render(db, {"x": template}) == {"x": value}


async def test_templates_inside_text_are_written_as_text(db):
    payload = {
        "s": "day={{ params.day }}",
        "n": "n={{ params.n }}",
        "b": "{{ params.flag }}!",
        "z": "[{{ params.nothing }}]",
        "o": "cfg {{ params.cfg }}",
        "l": "{{ nodes.split.result.files }} and {{ nodes.split.result.rows }}",
    }
    assert await render(db, payload) == {
        "s": "day=2026-11-21",
        "n": "n=3",
        "b": "true!",
        "z": "[null]",
        "o": 'cfg {"a": [1, 2]}',
        "l": '["a.csv", "b.csv"] and 2',
    }


async def test_the_whole_payload_walked_nested_and_in_lists(db):
    payload = {
        "a": [{"b": ["x", "{{ params.n }}", {"c": "{{ params.day }}/{{ params.n }}"}]}],
        "d": {"e": {"f": "{{ nodes.split.result.files[1] }}"}},
        "g": 1,
        "h": None,
    }
    assert await render(db, payload) == {
        "a": [{"b": ["x", 3, {"c": "2026-11-21/3"}]}],
        "d": {"e": {"f": "b.csv"}},
        "g": 1,
        "h": None,
    }


async def test_a_payload_that_is_itself_a_template(db):
    assert await render(db, "{{ nodes.split.result }}") == CONTEXT["nodes"]["split"]["result"]
    assert await render(db, "file {{ params.n }}") == "file 3"


async def test_item_and_index_come_from_arguments_or_the_context(db):
    payload = {"file": "{{ item }}", "n": "{{ index }}", "name": "{{ item.name }}-{{ index }}"}
    assert await apply(db, payload, CONTEXT, {"name": "a"}, 4) == (
        {"file": {"name": "a"}, "n": 4, "name": "a-4"},
        None,
    )
    in_context = {**CONTEXT, "item": {"name": "b"}, "index": 0}
    assert await render(db, payload, in_context) == {"file": {"name": "b"}, "n": 0, "name": "b-0"}


async def test_a_null_item_is_an_item(db):
    assert await apply(db, {"x": "{{ item }}", "y": "<{{ item }}>"}, CONTEXT, None, 0) == (
        None,
        "template {{ item }} at payload.x: item is only defined in a node with map",
    )
    assert await apply(db, {"x": "{{ item }}", "y": "<{{ item }}>"}, CONTEXT, "null", 0) == (
        {"x": "null", "y": "<null>"},
        None,
    )
    [row] = await rows(
        db,
        "SELECT r.* FROM sluice.template_apply(%s, sluice.template_compile(%s), '{}', 'null', 0) r",
        Jsonb({"x": "{{ item }}"}),
        Jsonb({"x": "{{ item }}"}),
    )
    assert row == {"payload": {"x": None}, "error": None}


async def test_values_from_the_context_are_never_rendered_again(db):
    context = {
        "params": {"evil": "{{ params.secret }}", "secret": "s3cr3t"},
        "nodes": {"a": {"state": "succeeded", "result": {"t": "{{ nodes.a.result }}"}}},
    }
    payload = {"x": "{{ params.evil }}", "y": "<{{ params.evil }}>", "z": "{{ nodes.a.result }}"}
    assert await render(db, payload, context) == {
        "x": "{{ params.secret }}",
        "y": "<{{ params.secret }}>",
        "z": {"t": "{{ nodes.a.result }}"},
    }


@pytest.mark.parametrize(
    "text",
    [
        "{{name}}",
        "Hello {{ user.first_name }}",
        "{{ items }}",
        "{{ paramsx.a }}",
        "{{",
        "}} {{ {{",
        "{{{ item }}}",
        "a {{ 1 + 1 }} b",
    ],
)
async def test_braces_that_are_not_a_template_are_left_as_they_are(db, text):
    assert await render(db, {"x": text}) == {"x": text}


async def test_object_keys_are_never_rendered(db):
    payload = {"{{ params.day }}": "{{ params.day }}"}
    assert await render(db, payload) == {"{{ params.day }}": "2026-11-21"}


# What is missing, null, or defaulted


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ nodes.split.result.filez }}", 'nodes.split.result has no key "filez"'),
        (
            "{{ nodes.split.result.files[5] }}",
            "nodes.split.result.files has no element [5] (it has 2)",
        ),
        (
            "{{ nodes.split.result.files.k }}",
            'nodes.split.result.files is a list: it has no key "k"',
        ),
        (
            "{{ nodes.split.result.rows.k }}",
            'nodes.split.result.rows is a number: it has no key "k"',
        ),
        ("{{ nodes.nope.result }}", 'no node "nope" comes before this one'),
        ("{{ params.missing }}", 'params has no key "missing"'),
        ("{{ item }}", "item is only defined in a node with map"),
        ("{{ index }}", "index is only defined in a node with map"),
    ],
)
async def test_a_missing_value_is_an_error_naming_node_template_and_place(db, template, message):
    error = await render_error(db, {"a": {"b": [template]}}, node="parse")
    assert error == f"node parse: template {template} at payload.a.b[0]: {message}"


async def test_a_path_through_null_is_null_and_default_replaces_missing_or_null(db):
    payload = {
        "through_null": "{{ nodes.skipped.result.rows }}",
        "deep_null": "{{ nodes.skipped.result.a[3].b }}",
        "missing": "{{ nodes.split.result.nope | default(0) }}",
        "null": '{{ params.nothing | default("none") }}',
        "through": "{{ nodes.skipped.result.rows | default(-1) }}",
        "present": "{{ params.n | default(99) }}",
        "text": "rows={{ nodes.skipped.result.rows | default(0) }}",
        "false": "{{ params.flag | default(false) }}",
    }
    assert await render(db, payload) == {
        "through_null": None,
        "deep_null": None,
        "missing": 0,
        "null": "none",
        "through": -1,
        "present": 3,
        "text": "rows=0",
        "false": True,
    }


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ nodes.split }}", "write nodes.ID.result or nodes.ID.state (then a path, if any)"),
        ("{{ nodes.split.payload }}", "write nodes.ID.result or nodes.ID.state"),
        ("{{ index.a }}", "index is a number: it has no keys"),
        ("{{ params.a b }}", "cannot read ' b'"),
        ("{{ params.a[x] }}", "cannot read '[x]'"),
        ("{{ params.a | default({}) }}", "default({}) needs one JSON value"),
        ("{{ params.a | default(nope) }}", "default(nope) needs one JSON value"),
        ("{{ params.a | upper }}", "cannot read ' | upper'"),
        ("{{ params.a", "not closed (no }} after it)"),
        ("x {{ item.a", "not closed (no }} after it)"),
    ],
)
async def test_a_malformed_template_is_refused_with_its_problem(db, template, message):
    error = await render_error(db, {"x": template})
    assert error.startswith("template {{")
    assert " at payload.x: " in error
    assert message in error


async def test_apply_reports_instead_of_raising(db):
    payload, error = await apply(db, {"x": "{{ nodes.split.result.none }}"})
    assert payload is None
    assert (
        error == "template {{ nodes.split.result.none }} at payload.x: "
        'nodes.split.result has no key "none"'
    )


# Hostile input: bounded work, clear answers


@pytest.fixture
async def bounded(db):
    """Hostile input must be answered quickly: a runaway statement fails the test."""
    await db.execute("SET statement_timeout = '20s'")
    return db


async def test_deep_nesting_without_templates_is_returned_as_is(bounded):
    # Built and compared in SQL: Python's json module cannot nest this deep.
    for deep in ("[" * 5000 + '"{{ name }}"' + "]" * 5000, '{"a":' * 5000 + "1" + "}" * 5000):
        assert await scalar(
            bounded,
            "SELECT sluice.template_render(%s::jsonb, %s) = %s::jsonb",
            deep,
            Jsonb(CONTEXT),
            deep,
        )


async def test_a_template_too_deep_is_reported_not_ignored(bounded):
    shallow = json.loads('{"a":' * 63 + '"{{ params.n }}"' + "}" * 63)
    assert json.dumps(await render(bounded, shallow)).count("3") == 1
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="deeper than 64 levels"):
        await scalar(
            bounded,
            "SELECT sluice.template_render(%s::jsonb, %s)",
            "[" * 5000 + '"{{ params.n }}"' + "]" * 5000,
            Jsonb(CONTEXT),
        )


async def test_many_templates_are_refused(bounded):
    ok = {"x": "{{ params.n }}" * 256}
    assert await render(bounded, ok) == {"x": "3" * 256}
    error = await render_error(bounded, {"x": "{{ params.n }}" * 100_000})
    assert error == "at payload.x: more than 256 templates in one payload"
    error = await render_error(bounded, {f"k{i}": "{{ params.n }}" for i in range(300)})
    assert error == "at payload: more than 256 templates in one payload"


async def test_huge_strings_and_braces_cost_little(bounded):
    big = "x" * 2_000_000
    assert await render(bounded, {"x": big, "y": "{{ params.n }}"}) == {"x": big, "y": 3}
    braces = "{{ " * 300_000
    assert await render(bounded, {"x": braces}) == {"x": braces}
    unclosed = "{{ params.day" * 10_000
    assert "not closed" in await render_error(bounded, {"x": unclosed})
    many_accessors = "{{ params" + ".a" * 100 + " }}"
    assert "more than 64 accessors" in await render_error(bounded, {"x": many_accessors})
    long_key = "{{ params['" + "k" * 100_000 + "'] }}"
    assert "has no key" in await render_error(bounded, {"x": long_key})


async def test_a_huge_value_is_inserted_whole(bounded):
    files = [f"file-{i}.csv" for i in range(50_000)]
    context = {"params": {}, "nodes": {"split": {"state": "succeeded", "result": files}}}
    assert await render(bounded, {"x": "{{ nodes.split.result }}"}, context) == {"x": files}


# A map: one render per element, in one statement


async def test_ten_thousand_renders_in_one_statement(bounded):
    """The map case: one compile, one bind of what the elements share, then one
    apply per element. The figure in /work/coord/dataflow-design.md comes from
    the same statement, timed as backend CPU."""
    files = [f"file-{i}.csv" for i in range(10_000)]
    context = {
        "params": {"bucket": "b", "day": "2026-11-21"},
        "nodes": {"split": {"state": "succeeded", "result": {"files": files}}},
    }
    payload = {
        "file": "{{ item }}",
        "n": "{{ index }}",
        "url": "s3://{{ params.bucket }}/{{ params.day }}/{{ item }}",
    }
    started = time.perf_counter()
    rendered = await named_rows(
        bounded,
        """
        WITH compiled AS (SELECT sluice.template_compile(%(p)s) AS sites),
             bound AS (SELECT b.*
                         FROM compiled, sluice.template_bind(%(p)s, compiled.sites, %(c)s) b)
        SELECT e.n - 1 AS index, r.payload, r.error
          FROM bound
         CROSS JOIN jsonb_array_elements(%(c)s::jsonb #> '{nodes,split,result,files}')
               WITH ORDINALITY AS e(v, n)
         CROSS JOIN LATERAL sluice.template_apply(bound.payload, bound.sites, NULL, e.v,
                                                  (e.n - 1)::integer) AS r
         ORDER BY e.n
        """,
        p=Jsonb(payload),
        c=Jsonb(context),
    )
    elapsed = time.perf_counter() - started
    assert len(rendered) == 10_000
    assert rendered[0] == {
        "index": 0,
        "payload": {"file": "file-0.csv", "n": 0, "url": "s3://b/2026-11-21/file-0.csv"},
        "error": None,
    }
    assert rendered[9999]["payload"]["url"] == "s3://b/2026-11-21/file-9999.csv"
    assert all(r["error"] is None and r["payload"]["n"] == r["index"] for r in rendered)
    assert elapsed < 20  # a guard, not a benchmark: the machine is shared


async def test_bind_renders_what_the_elements_share_once(db):
    payload = {
        "day": "{{ params.day }}",
        "file": "{{ item }}",
        "url": "s3://{{ params.day }}/{{ item.name }}#{{ index }}",
    }
    [bound] = await named_rows(
        db,
        "SELECT b.* FROM sluice.template_bind(%(p)s, sluice.template_compile(%(p)s), %(c)s) b",
        p=Jsonb(payload),
        c=Jsonb(CONTEXT),
    )
    assert bound["error"] is None
    assert bound["payload"]["day"] == "2026-11-21"
    assert [s["where"] for s in bound["sites"]] == ["payload.url", "payload.file"]
    assert bound["sites"][0]["parts"][0] == "s3://2026-11-21/"
    [row] = await named_rows(
        db,
        "SELECT r.* FROM sluice.template_apply(%(p)s, %(s)s, NULL, %(i)s, 5) r",
        p=Jsonb(bound["payload"]),
        s=Jsonb(bound["sites"]),
        i=Jsonb({"name": "a.csv"}),
    )
    assert row == {
        "payload": {
            "day": "2026-11-21",
            "file": {"name": "a.csv"},
            "url": "s3://2026-11-21/a.csv#5",
        },
        "error": None,
    }


async def test_bind_reports_a_shared_mistake_once(db):
    payload = {"file": "{{ item }}", "url": "s3://{{ params.bucket }}/{{ item }}"}
    [bound] = await named_rows(
        db,
        "SELECT b.* FROM sluice.template_bind(%(p)s, sluice.template_compile(%(p)s), %(c)s) b",
        p=Jsonb(payload),
        c=Jsonb(CONTEXT),
    )
    assert bound == {
        "payload": None,
        "sites": None,
        "error": 'template {{ params.bucket }} at payload.url: params has no key "bucket"',
    }


async def test_refs_list_every_template_with_its_place(db):
    payload = {
        "a": ["{{ nodes.split.result.files[0] }}", "x{{ item }}"],
        "b": "{{ nodes.x }}",
        "c": "{{ params.day | default(1) }}",
    }
    found = await rows(
        db, "SELECT * FROM sluice.template_refs(%s, 'nodes[2].payload')", Jsonb(payload)
    )
    assert sorted(found, key=lambda r: r["at"]) == [
        {
            "at": "nodes[2].payload.a[0]",
            "template": "{{ nodes.split.result.files[0] }}",
            "root": "nodes",
            "node": "split",
            "path": ["nodes", "split", "result", "files", "0"],
            "problem": None,
        },
        {
            "at": "nodes[2].payload.a[1]",
            "template": "{{ item }}",
            "root": "item",
            "node": None,
            "path": ["item"],
            "problem": None,
        },
        {
            "at": "nodes[2].payload.b",
            "template": "{{ nodes.x }}",
            "root": None,
            "node": None,
            "path": None,
            "problem": "write nodes.ID.result or nodes.ID.state (then a path, if any)",
        },
        {
            "at": "nodes[2].payload.c",
            "template": "{{ params.day | default(1) }}",
            "root": "params",
            "node": None,
            "path": ["params", "day"],
            "problem": None,
        },
    ]
    assert await scalar(db, "SELECT count(*) FROM sluice.template_refs('{\"a\": 1}')") == 0


# `when` conditions


@pytest.mark.parametrize(
    "condition",
    [
        "$.nodes.merge.result.rows > 0",
        '$.nodes.split.state == "succeeded" && $.params.day starts with "2026"',
        'exists($.nodes.split.result.files[*] ? (@ like_regex "csv$"))',
        "!($.params.n < 3)",
        "($.nodes.a.result.x > 1) is unknown",
        "$.params.deploy",
        "true",
        "strict $.nodes.a.result.x == 1",
    ],
)
async def test_a_condition_that_parses_is_accepted(db, condition):
    assert await scalar(db, "SELECT sluice.when_problem(%s)", condition) is None


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("$.nodes.merge.result.rows >", "does not parse as a SQL/JSON path: syntax error"),
        ('$.a like_regex "("', "does not parse as a SQL/JSON path: invalid regular expression"),
        ("$rows > 1", "uses a $variable: refer to values through $.params, $.nodes or $.run"),
        ("1", "is not a condition: it gives [1], not true or false"),
        ("$.type()", 'is not a condition: it gives ["object"]'),
        ("", "is empty"),
        ("   ", "is empty"),
        ("$.a == " + '"' + "x" * 5000 + '"', "is longer than 4000 characters"),
    ],
)
async def test_a_condition_that_cannot_work_is_refused_with_why(db, condition, problem):
    assert (await scalar(db, "SELECT sluice.when_problem(%s)", condition)).startswith(problem)


async def test_deeply_nested_condition_is_refused_not_crashing(bounded):
    condition = "(" * 1900 + "true" + ")" * 1900
    assert await scalar(bounded, "SELECT sluice.when_problem(%s)", condition) in (
        None,
        "does not parse as a SQL/JSON path: stack depth limit exceeded",
    )


async def test_the_nodes_a_condition_names(db):
    condition = (
        '$.nodes.a.result > 1 && $.nodes."b.c".state == "x" '
        "|| exists($.nodes.*.result) || $.nodes.a.state == $.params.x"
    )
    assert sorted(await scalar(db, "SELECT sluice.when_nodes(%s)", condition)) == ["a", "b.c"]
    assert await scalar(db, "SELECT sluice.when_nodes('$.a +')") == []


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        ("$.nodes.split.result.rows > 0", True),
        ("$.nodes.split.result.rows > 5", False),
        ('$.nodes.skipped.state == "skipped"', True),
        ("$.nodes.skipped.result.rows > 0", False),  # null compares false
        ("$.params.flag", True),  # a path to one boolean
        ("$.nodes.split.result.missing > 0", False),  # lax: nothing to compare
        ("$.params.day > 3", None),  # a string and a number: unknown
        ("strict $.nodes.split.result.missing > 0", None),  # strict: the path is an error
        ("$.params.n", None),  # not a boolean
        ("($.params.day > 3) is unknown", True),  # the user decides what unknown means
    ],
)
async def test_a_condition_holds_fails_or_is_unknown(db, condition, holds):
    assert await scalar(db, "SELECT sluice.when_eval(%s, %s)", condition, Jsonb(CONTEXT)) is holds


# A definition's data flow, checked at once


def node(node_id: str, *parents: str, **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "depends_on": list(parents), "payload": {}, **fields}


async def problems(db, nodes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found = await rows(db, "SELECT * FROM sluice.dag_dataflow_problems(%s)", Jsonb(nodes))
    return [(r["at"], r["problem"]) for r in found]


async def test_the_spec_example_has_no_problem(db):
    nodes = [
        node("split"),
        node(
            "parse",
            "split",
            map="{{ nodes.split.result.files }}",
            payload={"file": "{{ item }}", "n": "{{ index }}", "day": "{{ params.day }}"},
        ),
        node("merge", "parse", payload={"parts": "{{ nodes.parse.result }}"}),
        node("approve", "merge"),
        node(
            "publish",
            "approve",
            when="$.nodes.merge.result.rows > 0",
            payload={"json": "{{ nodes.merge.result }}", "n": "{{ nodes.split.result.files[0] }}"},
        ),
        node("literal", map=[1, 2, 3], payload={"x": "{{ item }}"}),
        node("from-params", map="{{ params.files }}", payload={"x": "{{ item }}"}),
    ]
    assert await problems(db, nodes) == []


async def test_every_problem_at_once_with_its_place(db):
    nodes = [
        node("split", payload={"x": "{{ params.day }}"}),
        node(
            "parse",
            "split",
            map="{{ nodes.split.result.files }}",
            payload={"later": "{{ nodes.merge.result }}", "u": "{{ nodes.nope.result }}"},
        ),
        node(
            "merge",
            "parse",
            payload={"i": "{{ item }}", "me": "{{ nodes.merge.state }}", "bad": "{{ nodes.x }}"},
            when='$.nodes.split.result.rows > 0 && $.nodes.other.state == "x"',
        ),
        node("other", map="files: {{ params.l }}", when="$.a +"),
        node("nested", "split", map="{{ item.files }}", when="1"),
        node("object", "merge", map={"a": 1}, when="$x > 1"),
        node(
            "state", "object", map="{{ nodes.split.state }}", when="$.item == 1", at="nodes.state"
        ),
        node("ghost", when='$.nodes.nobody.state == "x"'),
    ]
    assert await problems(db, nodes) == [
        (
            "nodes[1].payload.later",
            'template {{ nodes.merge.result }}: node "merge" is not an ancestor of "parse" '
            "(add it to depends_on, directly or through a parent)",
        ),
        ("nodes[1].payload.u", 'template {{ nodes.nope.result }} names unknown node "nope"'),
        (
            "nodes[2].payload.bad",
            "template {{ nodes.x }}: write nodes.ID.result or nodes.ID.state (then a path, if any)",
        ),
        (
            "nodes[2].payload.i",
            "template {{ item }}: item is only defined in a node with map",
        ),
        (
            "nodes[2].payload.me",
            "template {{ nodes.merge.state }}: a node cannot use its own result or state",
        ),
        (
            "nodes[2].when",
            'node "other" is not an ancestor of "merge" '
            "(add it to depends_on, directly or through a parent)",
        ),
        (
            "nodes[3].map",
            "must be a list, or one template that gives a list "
            '(such as "{{ nodes.ID.result.items }}")',
        ),
        (
            "nodes[3].when",
            "does not parse as a SQL/JSON path: syntax error at end of jsonpath input",
        ),
        (
            "nodes[4].map",
            "template {{ item.files }}: a map inside a map is not supported "
            "(map over a list from a parent or from params)",
        ),
        (
            "nodes[4].when",
            "is not a condition: it gives [1], not true or false "
            "(compare something, as in $.nodes.ID.result.rows > 0)",
        ),
        (
            "nodes[5].map",
            "must be a list, or one template that gives a list "
            '(such as "{{ nodes.ID.result.items }}")',
        ),
        ("nodes[5].when", "uses a $variable: refer to values through $.params, $.nodes or $.run"),
        (
            "nodes.state.map",
            "template {{ nodes.split.state }}: a node state is a string, not a list",
        ),
        (
            "nodes.state.when",
            "a condition cannot use $.item or $.index: "
            "it is evaluated once per node, before any map",
        ),
        ("nodes[7].when", 'names unknown node "nobody"'),
    ]


async def test_an_ancestor_through_several_parents_is_an_ancestor(db):
    nodes = [
        node("a"),
        node("b", "a"),
        node("c", "a"),
        node("d", "b", "c", payload={"x": "{{ nodes.a.result }}"}),
        node("e", "d", payload={"x": "{{ nodes.a.result }}", "y": "{{ nodes.c.state }}"}),
        node("side"),
        node("f", "e", payload={"x": "{{ nodes.side.result }}"}, when='$.nodes.b.state == "x"'),
    ]
    assert await problems(db, nodes) == [
        (
            "nodes[6].payload.x",
            'template {{ nodes.side.result }}: node "side" is not an ancestor of "f" '
            "(add it to depends_on, directly or through a parent)",
        )
    ]


async def test_a_large_definition_is_checked_in_linear_time(bounded):
    nodes = [
        node(
            f"n{i}",
            *([f"n{i - 1}"] if i else []),
            payload={
                "a": f"{{{{ nodes.n{i - 2}.result.x }}}}" if i > 1 else "x",
                "d": "{{ params.day }}",
            },
        )
        for i in range(5000)
    ]
    assert await problems(bounded, nodes) == []
