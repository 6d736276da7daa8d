"""The claimer's bound (each claim from one queue starts where the last full one
ended) and the completer's write when nothing else runs."""

from __future__ import annotations

import asyncio
import json

from sluice.core.protocol import Succeeded
from sluice.worker.cancelling import cancel_and_wait
from sluice.worker.claimer import Claimer
from sluice.worker.completer import Completer
from sluice.worker.leases import Leases
from sluice.worker.meters import Meters
from sluice.worker.writer import Writer
from tests.factories import fetch_job, insert_job, make_job, scalar
from tests.worker.helpers import claimed, wait_state


def claimer(pool, queues=("default",)) -> Claimer:
    # _claim uses the pool alone; the executor and completer drive run(), not used here.
    return Claimer(
        pool,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        worker_id="w-bound",
        queues=queues,
        concurrency=10,
        lease_ttl=30,
        poll_interval=5,
        backlog_limit=100,
        leases=Leases(),
    )


async def test_a_full_claim_sets_the_bound_and_a_notification_drops_it(db, pool):
    c = claimer(pool)
    ids = [await insert_job(db) for _ in range(4)]
    assert [j.id for j in await c._claim(2)] == ids[:2]
    urgent = await insert_job(db, priority=-1)  # ready behind the bound
    assert [j.id for j in await c._claim(1)] == [ids[2]]
    c.notify("default")  # what the INSERT's NOTIFY does
    assert [j.id for j in await c._claim(1)] == [urgent]


async def test_a_short_claim_or_a_poll_starts_at_the_head_again(db, pool):
    c = claimer(pool)
    first = await insert_job(db)
    assert [j.id for j in await c._claim(5)] == [first]  # short: no bound kept
    behind = await insert_job(db, priority=-1)
    assert [j.id for j in await c._claim(1)] == [behind]
    ids = [await insert_job(db) for _ in range(2)]
    assert [j.id for j in await c._claim(1)] == [ids[0]]  # full: bound kept
    urgent = await insert_job(db, priority=-2)
    c.catch_up()  # a reconnect, a resume, or the fallback poll
    assert [j.id for j in await c._claim(1)] == [urgent]


async def test_a_worker_on_several_queues_keeps_no_bound(db, pool):
    c = claimer(pool, queues=("a", "b"))
    await insert_job(db, queue="a")
    await insert_job(db, queue="a")
    assert len(await c._claim(1)) == 1
    urgent = await insert_job(db, queue="a", priority=-1)
    assert [j.id for j in await c._claim(1)] == [urgent]


async def test_an_outcome_is_written_at_once_when_no_job_still_runs(db, database_url):
    writer = Writer(database_url)
    # An interval no test would wait out: the write must come from the idle rule.
    completer = Completer(writer, "test-worker", Meters(), batch=100, interval=3600)
    completer.more_expected = lambda: False
    task = asyncio.create_task(completer.run())
    try:
        job_id = await make_job(db, "running")
        completer.record(Succeeded(claimed(job_id), json.dumps("done")))
        await wait_state(db, job_id, "succeeded")
        assert (await fetch_job(db, job_id))["result"] == "done"
        assert await scalar(db, "SELECT count(*) FROM sluice.job_attempts") == 1
    finally:
        await completer.drain()
        await cancel_and_wait([task])
        await writer.close()


async def test_a_worker_taking_every_queue_keeps_no_bound(db, pool):
    c = claimer(pool, queues=("*",))
    await insert_job(db, queue="a")
    await insert_job(db, queue="a")
    assert len(await c._claim(1)) == 1
    assert c._after is None  # a bound belongs to one named queue's scan
    urgent = await insert_job(db, queue="b", priority=-1)
    c.notify("b")  # a queue it never named: it is woken all the same
    assert c.notified == 1
    assert [j.id for j in await c._claim(1)] == [urgent]
