"""Named queries: the files parse, and every query runs against the real schema."""

import re

import pytest

from sluice.core.queries import QUERIES, parse, sql


def test_parse_splits_named_blocks():
    queries = parse("-- name: a :one\nSELECT 1;\n\n-- name: b :exec\nSELECT 2;\n", "x.sql")
    assert {q.name: (q.kind, q.sql) for q in queries.values()} == {
        "a": ("one", "SELECT 1;"),
        "b": ("exec", "SELECT 2;"),
    }


def test_a_query_ends_before_the_comments_of_the_next():
    text = (
        "-- name: a :one\nSELECT 1\n  -- a's own comment\n  FROM x;\n\n"
        "-- b does this.\n-- name: b :exec\nSELECT 2;\n"
    )
    assert parse(text, "x.sql")["a"].sql == "SELECT 1\n  -- a's own comment\n  FROM x;"
    assert not any(
        q.sql.rstrip().splitlines()[-1].lstrip().startswith("--") for q in QUERIES.values()
    )


def test_parse_rejects_a_file_without_headers():
    with pytest.raises(ValueError, match="no `-- name"):
        parse("SELECT 1;", "x.sql")


def test_parse_rejects_duplicate_names():
    with pytest.raises(ValueError, match="defined twice"):
        parse("-- name: a :one\nSELECT 1;\n-- name: a :one\nSELECT 2;", "x.sql")


def test_an_unknown_query_is_named_in_the_error():
    with pytest.raises(KeyError, match="no query named nope"):
        sql("nope")


@pytest.mark.parametrize("query", list(QUERIES.values()), ids=lambda q: q.name)
async def test_every_query_plans_against_the_schema(db, query):
    """PREPARE checks each query's syntax and every name it uses, without running it."""
    if query.kind == "copy":  # cannot be prepared: run it, every column named, no row
        from sluice.core.enqueueing import COPY_COLUMNS, job_copy

        async with db.transaction(force_rollback=True):
            await job_copy(db, columns=COPY_COLUMNS, rows=b"")
        return
    names: list[str] = []

    def placeholder(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    statement = re.sub(r"%\((\w+)\)s", placeholder, query.sql).rstrip().rstrip(";")
    await db.execute(f"PREPARE checked AS {statement}")
