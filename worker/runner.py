"""A worker process's life: start every part, run until asked to stop, stop
without losing a job.

    claim (pool) --> execute (tasks) --> complete (writer, batched)
        ^                                     |
    listener (LISTEN connection)     heartbeat (writer): worker row, pause flag
    lease keeper (own thread and connection): leases of the attempts held
    maintenance (pool, when leader): promote, rescue, cron, prune

Shutdown (SIGTERM): stop claiming, let running jobs finish for up to the grace
period, stop the rest, write every outcome, hand the unfinished jobs back
(job_release_many: they are ready again at once, the attempt not counted), and
mark the worker stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from sluice.core import protocol
from sluice.core.db import PREPARED, open_pool
from sluice.core.logging import redact_url
from sluice.core.protocol import Key
from sluice.worker.cancelling import cancel_and_wait
from sluice.worker.claimer import Claimer
from sluice.worker.completer import Completer
from sluice.worker.executor import Executor
from sluice.worker.heartbeat import Heartbeat
from sluice.worker.leases import LeaseKeeper, Leases
from sluice.worker.listener import Listener
from sluice.worker.meters import Meters
from sluice.worker.registry import REGISTRY, Registry
from sluice.worker.resources import Resources
from sluice.worker.retrying import TRANSIENT, describe, retry_transient
from sluice.worker.settings import WorkerSettings
from sluice.worker.writer import Writer

if TYPE_CHECKING:
    # Imported when this process takes part in maintenance (croniter and the
    # maintenance parts are tens of ms of a worker's start-up).
    from sluice.worker.maintenance import Maintenance

log = logging.getLogger("sluice.worker")


@functools.cache
def sluice_version() -> str | None:
    """The installed sluice's version, for the worker row (read at registration,
    off the path to the first claim)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sluice")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return None


# Seconds the claimer and maintenance wait for a pooled connection (see open_pool).
POOL_TIMEOUT = 5.0


class WorkerCrashedError(RuntimeError):
    """A part of the worker failed unexpectedly; the worker shut down."""


class Worker:
    """One worker: call `run()`; call `stop()` (or set the stop event) to end it."""

    def __init__(
        self,
        settings: WorkerSettings,
        database_url: str,
        *,
        registry: Registry | None = None,
        prepare: bool = True,
        listen_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.id = settings.id
        self._url = database_url
        self._listen_url = listen_url or database_url
        self._prepare = prepare
        self.registry = registry or REGISTRY
        self._stop_requested = asyncio.Event()
        self._hurry = False
        #: Registered and running (the first claim may come before).
        self.started = asyncio.Event()
        #: The worker row exists.
        self.registered = asyncio.Event()
        self.meters = Meters()
        self.listener: Listener | None = None
        self.claimer: Claimer | None = None
        self.executor: Executor | None = None
        self.completer: Completer | None = None
        self.heartbeat: Heartbeat | None = None
        self.leases = Leases()
        self.keeper: LeaseKeeper | None = None
        self.maintenance: Maintenance | None = None
        self._stopping = False
        self._hurried = asyncio.Event()

    def stop(self, *, hurry: bool = False) -> None:
        """Ask the worker to stop; `hurry` skips the grace period (second signal)."""
        self._stop_requested.set()
        if hurry and not self._hurry:
            self._hurry = True
            self._hurried.set()
            if self._stopping:
                log.warning("stopping at once: unfinished jobs are handed back now")

    async def _register(self, conn: Any) -> None:
        s = self.settings
        await protocol.worker_register(
            conn,
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=list(s.queues),
            concurrency=s.concurrency,
            heartbeat_interval=dt.timedelta(seconds=s.heartbeat_interval),
            version=sluice_version(),
            tasks=self.registry.names(),
        )

    async def _reregister(self, conn: Any) -> None:
        """The heartbeat found the row gone (pruned as dead): register anew."""
        await self._register(conn)
        if self.claimer is not None:
            # Its waiter rows went with the old row.
            self.claimer.forget_waiting()

    async def _register_first(self, writer: Writer, first_claim_done: asyncio.Event) -> None:
        # One step behind the pool's opening, whose workers then start its connection
        # first: the first claim waits for that one.
        await asyncio.sleep(0)
        async with writer.connection() as conn:
            # Connected at once, so a wrong URL or a database that is not there ends
            # the worker at once; the statement once the first claim has answered, so
            # that neither its round trip nor the server's work on it (a fresh
            # backend's first statement: catalog lookups, the function's compilation)
            # comes before the claim or competes with it.
            await first_claim_done.wait()
            await self._register(conn)

    async def _connect(
        self, writer: Writer, first_claim_done: asyncio.Event
    ) -> tuple[Any, asyncio.Task[None]]:
        """Open the pool while the writer's connection opens; answer the pool and the
        registration, which waits for `first_claim_done` to register the worker row.

        The first claim waits for the pool only. Nothing it relies on needs the row:
        job_claim filters by the tasks it is given (p_tasks), not by the row's
        `tasks`; leases are renewed (job_heartbeat), outcomes written and expired
        leases rescued by jobs.worker_id and the lease, never through sluice.workers
        (no foreign key). Until the row exists (milliseconds), queue_stats and
        worker_status do not count this worker, as before it started. The
        claimer writes no waiter row before the row exists (its `registered` event):
        worker_prune removes those with the row of a worker that died. The heartbeat
        starts after the registration, so it never finds the row missing in between.
        A registration that fails ends the worker with its own error: a wrong URL
        before the first claim, a database that refuses the row after it."""
        s = self.settings
        opening = asyncio.create_task(
            open_pool(
                self._url,
                min_size=1,
                max_size=s.pool_size,
                prepare=self._prepare,
                application_name="sluice-worker",
                # A caller waits at most this long for a connection, and a pool that
                # lost the database starts a fresh attempt after twice that instead
                # of waiting out psycopg_pool's doubling delay: the claimer and the
                # leader are back within seconds of the database, however long it
                # was away.
                db_timeout=POOL_TIMEOUT,
            ),
            name="sluice-open-pool",
        )
        registration = asyncio.create_task(
            self._register_first(writer, first_claim_done), name="sluice-register"
        )
        try:
            # A registration that fails first fails at once: the pool would wait its
            # whole timeout for a database that is not there.
            while not opening.done():
                await asyncio.wait({registration, opening}, return_when=asyncio.FIRST_COMPLETED)
                if registration.done():
                    registration.result()
            return opening.result(), registration
        except BaseException:
            await cancel_and_wait([registration, opening])
            if not registration.cancelled():
                registration.exception()  # retrieved: the error raised is the other's
            if not opening.cancelled() and opening.exception() is None:
                await opening.result().close()
            raise

    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """Run until `stop()` is called or `stop_event` is set, then shut down cleanly."""
        s = self.settings
        self.registry.import_modules(s.task_modules)
        # Before the first claim has answered, only the pool's connection and the
        # writer's are opened, and only the claim runs: the probe's connections, the
        # registration's statement, the listener's connection and maintenance come
        # after it (a fresh server backend's first statement is most of the claim's
        # time; on a small machine the others' start-up competed with it).
        first_claim_done = asyncio.Event()
        # Whether prepared statements survive between us and the server (a pooler)
        # is probed after the first claim, not before it: until the answer, every
        # connection of this worker runs its statements unprepared (see
        # PREPARED.probe_in_background).
        probing = (
            PREPARED.probe_in_background(self._url, start=first_claim_done)
            if self._prepare
            else None
        )
        writer = Writer(self._url, prepare=self._prepare)
        try:
            pool, registration = await self._connect(writer, first_claim_done)
        except BaseException:
            await writer.close()
            if probing is not None:
                await cancel_and_wait([probing])
            raise
        resources = Resources(s, pool)
        tasks: dict[str, asyncio.Task[None]] = {}
        keeper_start: asyncio.Handle | None = None
        metrics_server = None
        try:
            if s.metrics_port:
                from prometheus_client import start_http_server

                from sluice.core.metrics import WORKER_REGISTRY

                try:
                    metrics_server, _ = start_http_server(
                        s.metrics_port, s.metrics_host, registry=WORKER_REGISTRY
                    )
                except OSError as exc:
                    raise WorkerCrashedError(
                        f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: {exc.strerror}"
                    ) from None
            self.completer = completer = Completer(
                writer, self.id, self.meters, batch=s.complete_batch, interval=s.complete_interval
            )
            completer.on_settled = self.leases.settle
            self.executor = executor = Executor(
                self.registry,
                resources,
                completer,
                self.meters,
                self.leases,
                concurrency=s.concurrency,
                default_timeout=s.default_timeout,
            )
            self.claimer = claimer = Claimer(
                pool,
                executor,
                completer,
                worker_id=self.id,
                queues=s.queues,
                concurrency=s.concurrency,
                lease_ttl=s.lease_ttl,
                poll_interval=s.poll_interval,
                backlog_limit=max(10 * s.complete_batch, 2 * s.concurrency),
                leases=self.leases,
                tasks=tuple(self.registry.names()),
                registered=self.registered,
                answered=first_claim_done,
            )
            executor.on_finished = claimer.slot_freed
            completer.more_expected = lambda: bool(executor.running)
            self.heartbeat = heartbeat = Heartbeat(
                writer,
                claimer,
                worker_id=self.id,
                interval=s.heartbeat_interval,
                register=self._reregister,
            )
            self.keeper = LeaseKeeper(
                self._url,
                self.leases,
                worker_id=self.id,
                interval=s.heartbeat_interval,
                lease_ttl=s.lease_ttl,
                on_lost=self._lost,
                prepare=self._prepare,
            )
            self.listener = listener = Listener(
                self._listen_url,
                notify_url=self._url,
                on_jobs=claimer.notify,
                on_control=self._control,
                on_connected=claimer.catch_up,
            )
            # The claimer first: its first claim (it starts with a catch-up) is sent
            # in its first step; the listener connects once it has answered.
            tasks["claimer"] = asyncio.create_task(claimer.run(), name="sluice-claimer")
            tasks["listener"] = asyncio.create_task(
                self._after(first_claim_done, listener.run()), name="sluice-listener"
            )
            tasks["completer"] = asyncio.create_task(completer.run(), name="sluice-completer")
            tasks["heartbeat"] = asyncio.create_task(
                self._registered_then(registration, heartbeat.run()), name="sluice-heartbeat"
            )
            # After the claimer's first step (its claim sent), not after its answer: a
            # handler may block the event loop from its first line, which runs before
            # the claim returns, and its lease must be renewed meanwhile (the keeper's
            # own thread and connection). start() waits for that thread to set up its
            # loop; the keeper connects when it first renews.
            keeper_start = asyncio.get_running_loop().call_soon(self.keeper.start)
            if s.maintenance:
                from sluice.worker.maintenance import Maintenance

                self.maintenance = Maintenance(pool, s)
                # Its leader election and first passes after the first claim too.
                tasks["maintenance"] = asyncio.create_task(
                    self._after(first_claim_done, self.maintenance.run()),
                    name="sluice-maintenance",
                )
            waits = [asyncio.ensure_future(self._stop_requested.wait())]
            if stop_event is not None:
                waits.append(asyncio.ensure_future(stop_event.wait()))
            # A part that dies (a bug) must not leave a worker that looks alive but does nothing.
            watched = [*waits, *tasks.values()]
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            crashed = {
                name: task.exception()
                for name, task in tasks.items()
                if task in done and not task.cancelled() and task.exception() is not None
            }
            refused = (
                registration.exception()
                if registration.done() and not registration.cancelled()
                else None
            )
            for name, error in crashed.items():
                if error is not refused:  # that one is the worker's own error, raised below
                    log.error("worker part %s crashed; stopping", name, exc_info=error)
            await self._shutdown(tasks, writer, row=refused is None)
            if refused is not None:
                # The database refused the worker row (an unmigrated database): its own error.
                raise refused
            if crashed:
                name, error = next(iter(crashed.items()))
                raise WorkerCrashedError(f"worker part {name} crashed: {error}") from error
        finally:
            # The registration too: it waits for the first claim, which a part that
            # failed before it (the metrics port) never makes.
            await cancel_and_wait([*tasks.values(), registration, *([probing] if probing else [])])
            if keeper_start is not None:
                keeper_start.cancel()  # not started yet: never start it now
            if self.keeper is not None:
                await self.keeper.stop()
            if self.executor is not None:
                self.executor.close()
            await resources.close()
            await writer.close()
            await pool.close()
            if metrics_server is not None:
                metrics_server.shutdown()

    @staticmethod
    async def _after(event: asyncio.Event, part: Any) -> None:
        """Run the coroutine `part` once `event` is set."""
        try:
            await event.wait()
        except BaseException:
            part.close()
            raise
        await part

    async def _registered_then(self, registration: asyncio.Task[None], heartbeat: Any) -> None:
        """Once the worker row is registered: say the worker started, then beat."""
        try:
            await registration
        except BaseException:
            heartbeat.close()
            raise
        self.registered.set()
        s = self.settings
        log.info(
            "worker %s started: queues %s, concurrency %d, database %s",
            self.id,
            ",".join(s.queues),
            s.concurrency,
            redact_url(self._url),
        )
        self.started.set()
        await heartbeat

    async def _shutdown(
        self, tasks: dict[str, asyncio.Task[None]], writer: Writer, *, row: bool = True
    ) -> None:
        """Stop every part without losing a job; mark the worker row stopped unless
        `row` is False (the database refused the row: nothing to mark, and the
        worker's error is the registration's)."""
        s = self.settings
        assert self.claimer and self.executor and self.completer and self.keeper
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0 if self._hurry else s.shutdown_grace)
        running = len(self.executor.running)
        if not running:
            log.info("worker %s stopping: no job running", self.id)
        elif self._hurry:
            log.info("worker %s stopping: handing %d running job(s) back now", self.id, running)
        else:
            log.warning(
                "worker %s draining: no new jobs; waiting up to %gs for %d running job(s) "
                "to finish, then handing the rest back (signal again to hand them back now)",
                self.id,
                s.shutdown_grace,
                running,
            )
        self.claimer.stop()
        claimer = tasks.pop("claimer")
        # A claim in flight is let finish, so its jobs are run or handed back.
        await asyncio.wait([claimer], timeout=max(1.0, deadline - loop.time()))
        await cancel_and_wait([claimer])
        if self.maintenance is not None:
            await cancel_and_wait([tasks.pop("maintenance")])
        running_tasks = self.executor.tasks()
        if running_tasks:
            await self._until_hurried(running_tasks, deadline)
        # Past the grace period (or hurried): stop what is left and hand it back.
        self.executor.stop_all("shutdown")
        running_tasks = self.executor.tasks()
        if running_tasks:
            await asyncio.wait(running_tasks, timeout=5.0)
        # Jobs whose handler would not even stop are handed back too: the process is leaving.
        leftover: list[Key] = self.executor.handed_back + list(self.executor.running)
        # Give the writes a bounded time: a database that is gone will rescue them anyway.
        self.completer.deadline = loop.time() + max(5.0, s.shutdown_grace)
        if not tasks["completer"].done():
            await self.completer.drain()
        if leftover:
            await self._release(writer, leftover)
        # Leases are renewed until every job is written or handed back.
        await self.keeper.stop()
        await cancel_and_wait([tasks.pop("heartbeat")])
        if self.maintenance is not None:
            await self.maintenance.resign()
        if row:
            try:
                async with writer.connection() as conn:
                    await protocol.worker_stop(conn, id=self.id)
            except TRANSIENT as exc:
                log.warning("could not mark the worker stopped: %s", describe(exc))
        log.info("worker %s stopped", self.id)

    async def _until_hurried(self, aws: list[asyncio.Task[None]], deadline: float) -> None:
        """Wait until `aws` are all done, the loop's clock reaches `deadline`, or a
        second stop signal comes, whichever is first."""
        timeout = deadline - asyncio.get_running_loop().time()
        if self._hurry or timeout <= 0:
            return
        # asyncio.wait, not gather: cancelling the waiter leaves the jobs alone.
        everything = asyncio.ensure_future(asyncio.wait(aws))
        hurried = asyncio.ensure_future(self._hurried.wait())
        try:
            await asyncio.wait(
                [everything, hurried], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            everything.cancel()
            hurried.cancel()

    async def _release(self, writer: Writer, leftover: list[Key]) -> None:
        async def release() -> list[int]:
            async with writer.connection() as conn:
                return await protocol.job_release_many(conn, worker_id=self.id, attempts=leftover)

        try:
            rows = await retry_transient(
                "handing jobs back", release, deadline=asyncio.get_running_loop().time() + 10.0
            )
            log.info("handed %d unfinished job(s) back to their queues", len(rows))
        except TRANSIENT as exc:
            log.warning(
                "could not hand %d job(s) back (they are rescued when their leases expire): %s",
                len(leftover),
                describe(exc),
            )

    def _lost(self, keys: list[Key]) -> None:
        """The lease keeper found attempts that are no longer ours: stop them here."""
        assert self.executor
        stopped = self.executor.stop_attempts(keys, "lost")
        if stopped:
            log.warning(
                "stopped %d job(s) that are no longer this worker's (cancelled, or rescued "
                "after this worker stalled past its lease)",
                len(stopped),
                extra={"job_ids": stopped[:20]},
            )

    def _control(self, message: dict[str, Any]) -> None:
        """A sluice_control notification."""
        assert self.executor and self.claimer
        if "cancel" in message:
            ids = message["cancel"] if isinstance(message["cancel"], list) else [message["cancel"]]
            stopped = self.executor.stop_jobs((i for i in ids if isinstance(i, int)), "cancelled")
            if stopped:
                log.info("cancelled %d running job(s)", len(stopped), extra={"job_ids": stopped})
        if message.get("pause_worker") == self.id:
            self.claimer.set_paused(True)
        if message.get("resume_worker") == self.id:
            self.claimer.set_paused(False)
        if "resume_queue" in message and self.claimer.takes(message["resume_queue"]):
            self.claimer.catch_up()


async def run_worker(
    settings: WorkerSettings,
    database_url: str,
    *,
    stop_event: asyncio.Event | None = None,
    prepare: bool = True,
) -> None:
    """Run one worker until `stop_event` is set (or forever), then shut it down
    cleanly. For `sluice worker`, `sluice up` and tests."""
    await Worker(settings, database_url, prepare=prepare).run(stop_event)
