"""The wake-up path's order (issue 15): what runs between a NOTIFY and a handler's
first line is the claim and little else. The listener lets the claim a
notification woke go out before it waits on its connection again, and a claimed
job's handler starts before the claimer hands its connection back and does its
bookkeeping."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import psycopg

from sluice.core import protocol
from sluice.core.db import open_pool
from sluice.worker.cancelling import cancel_and_wait
from sluice.worker.claimer import Claimer
from sluice.worker.completer import Completer
from sluice.worker.executor import Executor
from sluice.worker.leases import Leases
from sluice.worker.listener import JOBS_CHANNEL, Listener
from sluice.worker.meters import Meters
from sluice.worker.registry import Registry
from sluice.worker.resources import Resources
from tests.factories import insert_job, scalar
from tests.worker.helpers import wait_for, worker_settings


async def test_the_listener_lets_the_woken_claim_go_before_the_next_notification(
    database_url,
):
    order: list[str] = []
    woken = asyncio.Event()
    connected = asyncio.Event()

    async def claimer() -> None:  # as the claimer's loop: woken by the event
        while True:
            await woken.wait()
            woken.clear()
            order.append("claim")

    def on_jobs(queue: str) -> None:
        order.append(queue)
        woken.set()

    listener = Listener(
        database_url,
        on_jobs=on_jobs,
        on_control=lambda _: None,
        on_connected=connected.set,
        self_test_within=10,
    )
    tasks = [asyncio.create_task(claimer()), asyncio.create_task(listener.run())]
    try:
        await asyncio.wait_for(connected.wait(), 15)
        # The self-test passed: notifications reach the listener's loop.
        await wait_for(
            lambda: getattr(listener.notifications, "state", None) == "ok", 15, "the self-test"
        )
        # One commit, two wake-ups: they reach the listener together.
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await conn.execute(
                "SELECT pg_notify(%(c)s, 'a'), pg_notify(%(c)s, 'b')", {"c": JOBS_CHANNEL}
            )
            await conn.commit()
        await wait_for(lambda: "b" in order and order[-1] == "claim", 10, "both wake-ups")
        assert order == ["a", "claim", "b", "claim"]
    finally:
        await cancel_and_wait(tasks)


class Kept(Completer):
    """A completer that keeps the outcomes it is handed instead of writing them."""

    def __init__(self, meters: Meters) -> None:
        super().__init__(None, "w", meters)  # type: ignore[arg-type]
        self.outcomes: list[Any] = []

    def record(self, outcome: Any) -> None:
        self.outcomes.append(outcome)


async def test_a_handler_starts_before_the_claim_connection_goes_back(db, database_url):
    # One connection in the pool: it is out while the claim holds it.
    pool = await open_pool(database_url, min_size=1, max_size=1)
    available_at_start: list[int] = []

    async def first_line(payload: Any) -> None:
        available_at_start.append(pool.get_stats().get("pool_available", 0))

    claimer, completer, executor = _claim_loop(pool, first_line=first_line)
    await insert_job(db, task="first_line")
    task = asyncio.create_task(claimer.run())  # its first claim takes the job
    try:
        await wait_for(lambda: completer.outcomes, 10, "the handler to run")
        assert claimer.claimed == 1
        # The handler's first line ran before the claimer gave the connection back.
        assert available_at_start == [0]
    finally:
        claimer.stop()
        await asyncio.wait_for(task, 10)
        executor.close()
        await pool.close()


def _claim_loop(pool: Any, **handlers: Any) -> tuple[Claimer, Kept, Executor]:
    """A claimer and its executor running `handlers`, outcomes kept, not written."""
    registry = Registry()
    for name, fn in handlers.items():
        registry.register(name, fn)
    meters, leases = Meters(), Leases()
    completer = Kept(meters)
    executor = Executor(
        registry,
        Resources(worker_settings(), pool),
        completer,
        meters,
        leases,
        concurrency=4,
        default_timeout=30.0,
    )
    claimer = Claimer(
        pool,
        executor,
        completer,
        worker_id="w-wake",
        queues=("default",),
        concurrency=4,
        lease_ttl=30,
        poll_interval=5,
        backlog_limit=100,
        leases=leases,
        # Not registered yet: after a short claim the claimer waits for that, without
        # a connection (registered, it would take one to write its waiter rows).
        registered=asyncio.Event(),
    )
    executor.on_finished = claimer.slot_freed
    return claimer, completer, executor


async def test_the_worker_claim_runs_no_subtransaction(db, pool):
    """The worker's claim is job_claim_once, without job_claim's subtransaction: a
    claim of one job takes one transaction id, not two (a subtransaction that
    writes gets an id of its own)."""
    for _ in range(20):
        await insert_job(db)
    before = await scalar(db, "SELECT pg_current_xact_id()::text::bigint")
    async with pool.connection() as conn:
        for _ in range(20):
            claimed = await protocol.job_claim(
                conn, worker_id="w-xid", queues=["default"], limit=1, lease=dt.timedelta(minutes=1)
            )
            assert len(claimed) == 1
    after = await scalar(db, "SELECT pg_current_xact_id()::text::bigint")
    # 20 claims and the second probe; leeway for an autovacuum ANALYZE meanwhile.
    assert after - before - 1 < 30


async def test_a_claim_that_meets_a_moved_row_is_made_again_at_once(db, pool, monkeypatch, caplog):
    """A 40001 (a row moved to history under the claim) comes to the claimer now:
    it claims again at once, without its error back-off or a warning, and the job
    runs."""
    real = protocol.job_claim
    failures = []

    async def moved_once(conn: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            await conn.execute(
                "DO $$BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure',"
                " MESSAGE = 'tuple to be locked was already moved to another partition'; END$$"
            )
        return await real(conn, **kwargs)

    monkeypatch.setattr(protocol, "job_claim", moved_once)
    claimer, completer, executor = _claim_loop(pool, noop=_noop)
    await insert_job(db)
    task = asyncio.create_task(claimer.run())
    try:
        with caplog.at_level(logging.WARNING, logger="sluice.worker"):
            await wait_for(lambda: completer.outcomes, 10, "the job to run")
        assert failures == [1] and claimer.claimed == 1
        assert not [r for r in caplog.records if "claim failed" in r.getMessage()]
    finally:
        claimer.stop()
        await asyncio.wait_for(task, 10)
        executor.close()


async def _noop(payload: Any) -> None:
    return None
