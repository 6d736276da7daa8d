"""`sluice api`: serve the REST API with uvicorn."""

from __future__ import annotations

import click

from app.cli.options import database_url


@click.command()
@database_url
@click.option("--host", envvar="SLUICE_API_HOST", help="Listen address [env: SLUICE_API_HOST].")
@click.option("--port", envvar="SLUICE_API_PORT", type=int,
              help="Listen port [env: SLUICE_API_PORT, default 8000].")
@click.option("--workers", "processes", envvar="SLUICE_API_PROCESSES", type=int, default=1,
              show_default=True, help="API processes [env: SLUICE_API_PROCESSES].")
def api(database_url: str | None, host: str | None, port: int | None, processes: int) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /schema, /health, /ready, /metrics).

    Tokens are checked with SLUICE_JWT_SECRET (HS256) or SLUICE_JWT_PUBLIC_KEY
    (RS256/ES256); see docs/api.md for every SLUICE_* setting.
    """
    import uvicorn

    from app.cli.options import require_database_url
    from app.core.config import SettingsError, load
    from app.main import create_app
    from app.settings import ApiSettings

    try:
        settings = load(ApiSettings, database_url=require_database_url(database_url),
                        host=host, port=port)
        app = create_app(settings) if processes == 1 else None
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if app is None:
        # Each process builds its own app (and pool) from the environment.
        import os

        os.environ["SLUICE_DATABASE_URL"] = settings.database_url or ""
        uvicorn.run("app.cli.api:app_from_environment", factory=True, host=settings.host,
                    port=settings.port, workers=processes, log_level="warning")
        return
    click.echo(f"sluice api on http://{settings.host}:{settings.port} (OpenAPI at /schema)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def app_from_environment():  # noqa: ANN201 - uvicorn factory
    """The app built from SLUICE_* variables (for multi-process serving)."""
    from app.core.config import load
    from app.main import create_app
    from app.settings import ApiSettings

    return create_app(load(ApiSettings))
