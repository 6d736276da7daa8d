"""The public SQL interface and the internal one (sql/schema/90_public.sql):
public functions are named verb first, every function is marked public or
internal in the catalog, and what the README and the SQL guide tell users to
call is public."""

from __future__ import annotations

import re
from pathlib import Path

from tests.factories import rows

ROOT = Path(__file__).resolve().parents[2]
# The first word of a public name: what it does.
VERBS = {
    "enqueue", "cancel", "retry", "discard", "pause", "resume", "set", "create",
    "start", "rerun", "signal", "await", "prune", "reserve",
}  # fmt: skip
CALL = re.compile(r"\bsluice\.([a-z_]+)\(")


async def _marks(db) -> dict[str, str]:
    found = await rows(
        db,
        "SELECT p.proname AS name, obj_description(p.oid, 'pg_proc') AS mark"
        "  FROM pg_proc p WHERE p.pronamespace = 'sluice'::regnamespace AND p.prokind = 'f'",
    )
    return {r["name"]: r["mark"] or "" for r in found}


async def test_every_function_is_marked_public_or_internal(db):
    marks = await _marks(db)
    unmarked = {n: m for n, m in marks.items() if not m.startswith(("public: ", "internal: "))}
    assert unmarked == {}


async def test_public_functions_are_named_verb_first(db):
    public = {n for n, m in (await _marks(db)).items() if m.startswith("public: ")}
    assert {"enqueue", "cancel_job", "retry_dead", "pause_queue", "resume_queue"} <= public
    assert {n for n in public if n.split("_")[0] not in VERBS} == set()


async def test_what_users_are_told_to_call_is_public(db):
    marks = await _marks(db)
    guide = (ROOT / "docs/sql.md").read_text().split("## The worker's side")[0]
    told = set(CALL.findall(guide + (ROOT / "README.md").read_text()))
    internal = {n for n in told if marks.get(n, "").startswith("internal: ")}
    assert internal == set()


async def test_the_public_doors_do_what_their_internals_do(db):
    run = (
        await rows(
            db, """SELECT sluice.create_run('{"nodes": [{"id": "a", "task": "t"}]}') AS id"""
        )
    )[0]["id"]
    assert (await rows(db, "SELECT * FROM sluice.await_run(%s)", run))[0]["state"] == "running"
    assert (await rows(db, "SELECT sluice.cancel_run(%s) AS n", run))[0]["n"] == 1
    assert (await rows(db, "SELECT * FROM sluice.await_run(%s)", run))[0]["state"] == "cancelled"
    job = (await rows(db, "SELECT sluice.enqueue('t') AS id"))[0]["id"]
    assert (await rows(db, "SELECT * FROM sluice.await_job(%s)", job))[0]["state"] == "ready"
    await db.execute("SELECT sluice.set_queue_concurrency('default', 3)")
    limit = await rows(db, "SELECT concurrency_limit FROM sluice.queues WHERE name = 'default'")
    assert limit == [{"concurrency_limit": 3}]
    assert (await rows(db, "SELECT sluice.prune_jobs('1 day') AS n"))[0]["n"] == 0
