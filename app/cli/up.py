"""`sluice up`: run everything (PostgreSQL, API, workers) in one process tree."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
from pathlib import Path

import click

from sluice.cli.options import database_url, queues_option, split_queues


@click.command()
@database_url
@click.option(
    "--data-dir",
    envvar="SLUICE_DATA_DIR",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the embedded PostgreSQL, the JWT secret and the admin token live "
    "[env: SLUICE_DATA_DIR, default ./.sluice].",
)
@click.option("--host", envvar="SLUICE_API_HOST", help="API listen address [env: SLUICE_API_HOST].")
@click.option(
    "--port",
    envvar="SLUICE_API_PORT",
    type=int,
    help="API and dashboard port [env: SLUICE_API_PORT].",
)
@click.option(
    "--workers",
    envvar="SLUICE_UP_WORKERS",
    type=int,
    help="Worker processes [env: SLUICE_UP_WORKERS].",
)
@queues_option(default="* (every queue)")
@click.option(
    "--pg-port",
    envvar="SLUICE_PG_PORT",
    type=click.IntRange(1, 65535),
    help="TCP port of the embedded PostgreSQL [env: SLUICE_PG_PORT; default: the last "
    "start's port while it is free].",
)
def up(
    database_url: str | None,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    queues: tuple[str, ...],
    pg_port: int | None,
) -> None:
    """Run Sluice: PostgreSQL, migrations, the API and dashboard, workers, maintenance.

    Without SLUICE_DATABASE_URL it creates (or reuses) a private PostgreSQL
    cluster in the data directory; with it, it uses that database. One `sluice
    up` at a time per data directory. Ctrl-C or SIGTERM stops everything it
    started, letting running jobs finish (SLUICE_UP_GRACE); a second Ctrl-C
    stops at once.
    """
    from sluice import stack
    from sluice.core.config import SettingsError, load
    from sluice.core.embedded import EmbeddedError

    try:
        settings = load(
            stack.UpSettings,
            data_dir=data_dir,
            host=host,
            port=port,
            workers=workers,
            queues=split_queues(queues),
            pg_port=pg_port,
        )
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None

    def on_ready(running: stack.Running) -> None:
        click.echo(banner(running))

    def on_child_exit(name: str) -> None:
        click.echo(f"sluice up: {name} exited unexpectedly; stopping everything.", err=True)

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        status = asyncio.run(
            stack.run(
                settings, database_url, on_ready=on_ready, on_child_exit=on_child_exit, say=say
            )
        )
    except (EmbeddedError, stack.StackError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("sluice up: stopped.")
    raise SystemExit(status)


def banner(running) -> str:
    """What `sluice up` prints once everything answers."""
    from sluice.stack import TOKEN_TTL

    lines = [
        "",
        "Sluice is up.",
        "",
        f"  Dashboard   {running.api_url}/login?token={running.token}",
        f"  API         {running.api_url}/api/v1   (OpenAPI: {running.api_url}/schema)",
        f"  Admin token {running.token_file}  (valid {TOKEN_TTL.days} days)",
    ]
    if running.embedded:
        password = shlex.quote(str(running.password_file))
        lines += [
            f"  PostgreSQL  {running.database_display}  (embedded, PostgreSQL "
            f"{running.postgres_version})",
            f"              password in {running.password_file}; for your own app:",
            '              export DATABASE_URL="'
            + running.database_display.replace("********", f"$(cat {password})")
            + '"',
        ]
    else:
        lines.append(f"  PostgreSQL  {running.database_display}")
    if running.psql:
        lines.append(f"  psql        {running.psql}")
    for url in running.metrics_urls:
        lines.append(f"  Metrics     {url}")
    for queue in running.unconsumed:
        lines.append(
            f"  Warning     queue {queue.queue} has {queue.ready + queue.scheduled} waiting "
            "job(s) and no live worker takes it (SLUICE_QUEUES)"
        )
    body = '{"task": "sleep", "payload": {"seconds": 1}}'
    # `make up` runs .venv/bin/sluice, which another terminal may not have on its PATH.
    sluice = "sluice" if shutil.which("sluice") else str(Path(sys.executable).with_name("sluice"))
    lines += [
        "",
        "Try, from another terminal in this directory:",
        "",
        f"  export SLUICE_TOKEN=$(cat {shlex.quote(str(running.token_file))})",
        '  curl -s -H "Authorization: Bearer $SLUICE_TOKEN" -H "Content-Type: application/json" \\',
        f"       -d '{body}' {running.api_url}/api/v1/jobs",
        f"  {sluice} submit examples/fan_out_fan_in.yaml --wait",
        f"  {sluice} runs list",
        "",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(lines)
