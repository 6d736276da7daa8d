"""`sluice worker`: run a worker (claims and runs jobs; takes part in maintenance)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

import click

from sluice.cli.options import (
    database_url,
    queues_option,
    require_database_url,
    split_queues,
)


@click.command()
@database_url
@queues_option(default="default")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    envvar="SLUICE_CONCURRENCY",
    help="Jobs run at once [env: SLUICE_CONCURRENCY; default: 10].",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar="SLUICE_METRICS_PORT",
    help="Serve Prometheus metrics on this port [env: SLUICE_METRICS_PORT].",
)
@click.option(
    "--maintenance/--no-maintenance",
    default=None,
    envvar="SLUICE_MAINTENANCE",
    help="Take part in the maintenance leader election [env: SLUICE_MAINTENANCE; default: on].",
)
@click.option(
    "--worker-id",
    envvar="SLUICE_WORKER_ID",
    help="This worker's id [env: SLUICE_WORKER_ID; default: host-pid-random].",
)
def worker(
    database_url: str | None,
    queues: tuple[str, ...],
    concurrency: int | None,
    metrics_port: int | None,
    maintenance: bool | None,
    worker_id: str | None,
) -> None:
    """Run a worker: claim ready jobs from the queues and run them.

    SIGTERM or Ctrl-C stops claiming and lets running jobs finish
    (SLUICE_SHUTDOWN_GRACE); a second one hands them back at once. Every
    SLUICE_* worker setting is read from the environment (see docs/worker.md).
    """
    import psycopg

    from sluice.core import logging as sluice_logging
    from sluice.core.config import CoreSettings, SettingsError, load
    from sluice.worker.runner import Worker, WorkerCrashedError
    from sluice.worker.settings import WorkerSettings

    url = require_database_url(database_url)
    try:
        core = load(CoreSettings)
        settings = load(
            WorkerSettings,
            queues=split_queues(queues),
            concurrency=concurrency,
            metrics_port=metrics_port,
            maintenance=maintenance,
            worker_id=worker_id,
        )
        sluice_logging.configure(core.log_format, core.log_level)
    except (SettingsError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None

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

    try:
        asyncio.run(main())
    except (ImportError, WorkerCrashedError) as exc:
        raise click.ClickException(str(exc)) from None
    except (psycopg.OperationalError, psycopg.errors.UndefinedFunction) as exc:
        raise click.ClickException(
            f"cannot use the database {sluice_logging.redact_url(url)}: {exc}\n"
            "Is it running, and is its schema migrated (`sluice migrate`)?"
        ) from None
    # A sync handler that ignored its cancel signal still holds a thread, which
    # would keep the interpreter alive at exit: its job was already handed back.
    if any(t.name.startswith("sluice-task") for t in threading.enumerate()):
        logging.getLogger("sluice.worker").warning("exiting with handler threads still running")
        logging.shutdown()
        os._exit(0)
