"""A node's parents' results reach its handler with the claim (ctx.parents), and
when together they are too large to send with it, through one more query."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from sluice.core import protocol
from tests.engine.dataflow import start

LEASE = dt.timedelta(minutes=1)
WORKER_ID = "parents-test"


async def _claim(db) -> list[protocol.ClaimedJob]:
    return await protocol.job_claim(
        db, worker_id=WORKER_ID, queues=["default"], limit=10, lease=LEASE
    )


@pytest.mark.parametrize("inline_bytes", [None, 1], ids=["with the claim", "read apart"])
async def test_a_child_receives_its_parents_results(db, inline_bytes):
    if inline_bytes is not None:
        await db.execute(f"SET sluice.inline_parents_bytes = {inline_bytes}")
    await start(
        db,
        [
            {"id": "a", "task": "produce"},
            {"id": "b", "task": "produce"},
            {"id": "c", "task": "consume", "depends_on": ["a", "b"]},
        ],
    )
    parents = sorted(await _claim(db), key=lambda job: job.node)
    assert [job.node for job in parents] == ["a", "b"]
    done = await protocol.job_complete_many(
        db,
        worker_id=WORKER_ID,
        outcomes=[
            protocol.Succeeded(job, json.dumps({"rows": rows, "node": job.node}))
            for job, rows in zip(parents, (3, 4), strict=True)
        ],
    )
    assert sorted(done) == sorted(job.id for job in parents)

    [child] = await _claim(db)

    assert child.parents == {
        "a": {"rows": 3, "node": "a"},
        "b": {"rows": 4, "node": "b"},
    }
