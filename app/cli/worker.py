"""`sluice worker`: run a worker (claims and runs jobs; takes part in maintenance)."""

from __future__ import annotations

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
    from sluice.cli.worker_process import WorkerExit, WorkerUsageError, run

    url = require_database_url(database_url)
    try:
        run(
            url,
            queues=split_queues(queues),
            concurrency=concurrency,
            metrics_port=metrics_port,
            maintenance=maintenance,
            worker_id=worker_id,
        )
    except WorkerUsageError as exc:
        raise click.UsageError(str(exc)) from None
    except WorkerExit as exc:
        raise click.ClickException(str(exc)) from None
