"""The body of `sluice worker`, without click: `sluice worker` given no arguments
(every setting from SLUICE_* variables, as containers, `sluice up` and the bench
start it) runs it straight from `sluice.cli.main`, skipping click's import (some
20 ms of a worker's start-up to its first claim, issue 15). sluice.cli.worker
parses the options of every other invocation and calls it too."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
from collections.abc import Iterator


class WorkerUsageError(ValueError):
    """A setting cannot be used; shown as a usage error."""


class WorkerExit(RuntimeError):
    """The worker could not start or crashed; the message is for the user."""


def run(
    url: str,
    *,
    queues: tuple[str, ...] | None = None,
    concurrency: int | None = None,
    metrics_port: int | None = None,
    maintenance: bool | None = None,
    worker_id: str | None = None,
) -> None:
    """Run a worker on `url` until SIGTERM or SIGINT (see `sluice worker --help`);
    options left None come from the SLUICE_* variables."""
    # asyncio too is imported here, not at the top: inside the pause.
    with collector_paused():
        import asyncio
        import logging
        import threading

        import psycopg

        # The built-in handlers too, which Worker.run imports before the first claim.
        import sluice.worker.handlers  # noqa: F401
        from sluice.core import logging as sluice_logging
        from sluice.core.config import CoreSettings, SettingsError, load
        from sluice.worker.runner import Worker, WorkerCrashedError
        from sluice.worker.settings import WorkerSettings

    try:
        core = load(CoreSettings)
        settings = load(
            WorkerSettings,
            queues=queues,
            concurrency=concurrency,
            metrics_port=metrics_port,
            maintenance=maintenance,
            worker_id=worker_id,
        )
        sluice_logging.configure(core.log_format, core.log_level)
    except (SettingsError, ValueError) as exc:
        raise WorkerUsageError(str(exc)) from None

    async def main() -> None:
        runner = Worker(settings, url, prepare=core.db_prepare, listen_url=core.listen_url)
        loop = asyncio.get_running_loop()
        signals = {"count": 0}

        def on_signal() -> None:
            signals["count"] += 1
            runner.stop(hurry=signals["count"] > 1)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await runner.run()

    # A database that is not there, or whose sluice schema is missing (no schema,
    # no function, no table: `sluice migrate` never ran, or an older one did).
    UNMIGRATED_OR_UNREACHABLE = (
        psycopg.OperationalError,
        psycopg.errors.InvalidSchemaName,
        psycopg.errors.UndefinedFunction,
        psycopg.errors.UndefinedTable,
    )
    # A worker allocates some ten containers per job (its task, coroutines, execution):
    # at the default threshold (700) the cyclic collector ran every few dozen no-op
    # jobs, 8 % of a drain's worker CPU, to find next to no garbage (issue 15).
    gc.set_threshold(7000, 10, 10)
    try:
        asyncio.run(main())
    except (ImportError, WorkerCrashedError) as exc:
        raise WorkerExit(str(exc)) from None
    except UNMIGRATED_OR_UNREACHABLE as exc:
        raise WorkerExit(
            f"cannot use the database {sluice_logging.redact_url(url)}: {exc}\n"
            "Is it running, and is its schema migrated (`sluice migrate`)?"
        ) from None
    # A sync handler that ignored its cancel signal still holds a thread, which
    # would keep the interpreter alive at exit: its job was already handed back.
    if any(t.name.startswith("sluice-task") for t in threading.enumerate()):
        logging.getLogger("sluice.worker").warning("exiting with handler threads still running")
        logging.shutdown()
        os._exit(0)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off while the worker's modules load, then
    freeze what they made (gc.freeze) and turn it back on.

    Loading asyncio, psycopg, msgspec and sluice makes some 59,000 tracked objects
    that live as long as the process: with the collector on, they cost some eighty
    collections on the way (about 8 % of the CPU a worker spends before its first
    claim, issue 15), and once promoted to the oldest generation every full
    collection of the process's life would walk them again. Frozen, no collection
    visits them; the price is the few hundred objects of start-up's own reference
    cycles (some 560 when measured), which stay. The user's task modules
    (SLUICE_TASK_MODULES) load afterwards with the collector on, as before. Nothing
    is paused when the collector was already off (the caller's choice)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def run_from_environment() -> bool:
    """`sluice worker` without arguments: run it with every setting from the
    environment and answer True, or answer False at once (no SLUICE_DATABASE_URL,
    or a setting the worker refuses) for click to run the command and report it."""
    url = os.environ.get("SLUICE_DATABASE_URL")
    if not url:
        return False
    try:
        run(url)
    except WorkerUsageError:
        # Before anything started: click reads the same settings again and shows
        # the error with the command's usage line.
        return False
    except WorkerExit as exc:
        import click

        click.ClickException(str(exc)).show()
        raise SystemExit(1) from None
    return True
