"""`sluice up`: run everything (PostgreSQL, API, workers) in one process tree."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
from pathlib import Path

import click

from sluice.cli.options import database_url


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
def up(
    database_url: str | None,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    workers: int | None,
) -> None:
    """Run Sluice: PostgreSQL, migrations, the API and dashboard, workers, maintenance.

    Without SLUICE_DATABASE_URL it creates (or reuses) a private PostgreSQL
    cluster in the data directory; with it, it uses that database. Ctrl-C or
    SIGTERM stops everything it started.
    """
    from sluice import stack
    from sluice.core.config import SettingsError, load
    from sluice.core.embedded import EmbeddedError

    try:
        settings = load(stack.UpSettings, data_dir=data_dir, host=host, port=port, workers=workers)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None

    def on_ready(running: stack.Running) -> None:
        click.echo(banner(running))

    def on_child_exit(name: str) -> None:
        click.echo(f"sluice up: {name} exited unexpectedly; stopping everything.", err=True)

    try:
        status = asyncio.run(
            stack.run(settings, database_url, on_ready=on_ready, on_child_exit=on_child_exit)
        )
    except (EmbeddedError, stack.StackError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("sluice up: stopped.")
    raise SystemExit(status)


def banner(running) -> str:
    """What `sluice up` prints once everything answers."""
    from sluice.stack import TOKEN_TTL

    where = "embedded, data in the data directory" if running.embedded else "external"
    lines = [
        "",
        "Sluice is up.",
        "",
        f"  Dashboard   {running.api_url}/login?token={running.token}",
        f"  API         {running.api_url}/api/v1   (OpenAPI: {running.api_url}/schema)",
        f"  Admin token {running.token_file}  (valid {TOKEN_TTL.days} days)",
        f"  PostgreSQL  {running.database_display}  ({where})",
    ]
    if running.psql:
        lines.append(f"  psql        {running.psql}")
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
