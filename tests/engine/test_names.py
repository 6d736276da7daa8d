"""The name domains (queue, task, tenant) and the DAG/schedule name checks
accept exactly the language they always did: a first character of one class,
then characters of another, up to a length. They are written without bounded
repetition (`{0,N}`), which PostgreSQL's regex engine expands into an automaton
N states long (20 us per task name); this pins that the rewrite changed
nothing a client can see."""

import re

import psycopg
import pytest

FIRST = {"queue": "[A-Za-z0-9]", "task": "[A-Za-z_]", "tenant": "[A-Za-z0-9]"}
LONGEST = {"queue": 64, "task": 200, "tenant": 64}
REST = "[A-Za-z0-9_.:-]"


def candidates(longest: int) -> list[str]:
    """Names around every edge: lengths 0 to past the bound, each character
    class first and later, characters just outside the classes, non-ASCII
    characters (more bytes than characters), a trailing newline."""
    probes = ["a", "Z", "0", "9", "_", ".", ":", "-", " ", "/", "é", "\n", "ß", "\x7f", "@"]
    names = [""]
    for n in (1, 2, longest - 1, longest, longest + 1, longest + 2):
        for p in probes:
            names += ["a" * (n - 1) + p, p + "a" * (n - 1), p * n]
    names += ["a" * (longest - 1) + "é", "é" * longest, "ok\n", "ok.name:v1-2_x"]
    return [n for n in names if "\x00" not in n]


@pytest.mark.parametrize("kind", sorted(FIRST))
async def test_name_domains_accept_the_same_language(db, kind):
    expected_pattern = re.compile(f"{FIRST[kind]}{REST}{{0,{LONGEST[kind] - 1}}}")
    for name in candidates(LONGEST[kind]):
        expected = expected_pattern.fullmatch(name) is not None
        try:
            await db.execute(f"SELECT %s::sluice.{kind}_name", (name,))
            accepted = True
        except psycopg.errors.CheckViolation as error:
            assert error.diag.constraint_name == f"{kind}_name_valid"
            accepted = False
        assert accepted == expected, (kind, name, len(name))


@pytest.mark.parametrize(
    ("table", "insert"),
    [
        ("dags", "INSERT INTO sluice.dags (name, version, definition) VALUES (%s, 1, '{}')"),
        (
            "schedules",
            "INSERT INTO sluice.schedules (name, cron, job)"
            " VALUES (%s, '* * * * *', '{\"task\": \"noop\"}')",
        ),
    ],
)
async def test_dag_and_schedule_names_keep_their_language(db, table, insert):
    expected_pattern = re.compile(f"[A-Za-z0-9]{REST}{{0,127}}")
    for name in candidates(128):
        try:
            async with db.transaction():
                await db.execute(insert, (name,))
                raise _Rollback
        except _Rollback:
            accepted = True
        except psycopg.errors.CheckViolation as error:
            assert error.diag.constraint_name == f"{table}_name_valid"
            accepted = False
        assert accepted == (expected_pattern.fullmatch(name) is not None), (table, name)


class _Rollback(Exception):
    pass
