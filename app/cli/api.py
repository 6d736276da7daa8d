"""`sluice api`: serve the REST API with uvicorn."""

from __future__ import annotations

import click

from sluice.cli.options import database_url, require_database_url


@click.command()
@database_url
@click.option(
    "--host",
    envvar="SLUICE_API_HOST",
    help="Listen address [env: SLUICE_API_HOST, default 127.0.0.1].",
)
@click.option(
    "--port",
    envvar="SLUICE_API_PORT",
    type=int,
    help="Listen port [env: SLUICE_API_PORT, default 8000].",
)
def api(database_url: str | None, host: str | None, port: int | None) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /schema, /health, /ready, /metrics).

    Tokens are checked with SLUICE_JWT_SECRET (HS256) or SLUICE_JWT_PUBLIC_KEY
    (RS256/ES256); docs/api.md lists every SLUICE_* setting. Run several
    processes behind a load balancer to use more cores.
    """
    import uvicorn

    from sluice.core.config import SettingsError, load
    from sluice.http.settings import ApiSettings
    from sluice.main import create_app

    try:
        settings = load(
            ApiSettings, database_url=require_database_url(database_url), host=host, port=port
        )
        app = create_app(settings)
    except (SettingsError, ImportError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"sluice api on http://{settings.host}:{settings.port} (OpenAPI at /schema)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
