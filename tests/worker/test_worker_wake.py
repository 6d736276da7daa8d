"""The wake-up path's order (issue 15): what runs between a NOTIFY and a handler's
first line is the claim and little else. The listener lets the claim a
notification woke go out before it waits on its connection again, and a claimed
job's handler starts before the claimer hands its connection back and does its
bookkeeping."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from sluice.core.db import NotificationCheck, open_pool
from sluice.worker.cancelling import cancel_and_wait
from sluice.worker.claimer import Claimer
from sluice.worker.completer import Completer
from sluice.worker.executor import Executor
from sluice.worker.leases import Leases
from sluice.worker.listener import JOBS_CHANNEL, Listener
from sluice.worker.meters import Meters
from sluice.worker.registry import Registry
from sluice.worker.resources import Resources
from tests.factories import insert_job
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
        await wait_for(
            lambda: (
                isinstance(listener.notifications, NotificationCheck)
                and listener.notifications.state == "ok"
            ),
            15,
            "the self-test",
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

    registry = Registry()
    registry.register("first_line", first_line)
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
        # Not registered yet: after its claim the claimer waits for that, without a
        # connection (registered, it would take one to write its waiter rows).
        registered=asyncio.Event(),
    )
    executor.on_finished = claimer.slot_freed
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
