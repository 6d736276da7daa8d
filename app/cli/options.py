"""Options shared by several commands."""

from __future__ import annotations

import click

database_url = click.option(
    "--database-url",
    envvar="SLUICE_DATABASE_URL",
    metavar="URL",
    help="PostgreSQL URL [env: SLUICE_DATABASE_URL].",
)


def queues_option(default: str):
    """--queue/-q, repeatable and comma separated (SLUICE_QUEUES): read it with
    split_queues."""
    return click.option(
        "--queue",
        "-q",
        "queues",
        multiple=True,
        envvar="SLUICE_QUEUES",
        help="Queue to take jobs from, * for every queue; repeat for several "
        f"[env: SLUICE_QUEUES, comma separated; default: {default}].",
    )


def split_queues(values: tuple[str, ...]) -> tuple[str, ...] | None:
    """The queues of repeated --queue options, each possibly comma separated
    (None: none given, the setting's default applies)."""
    queues = tuple(q.strip() for v in values for q in v.split(",") if q.strip())
    return queues or None


def require_database_url(url: str | None) -> str:
    if not url:
        raise click.UsageError(
            "No database: pass --database-url or set SLUICE_DATABASE_URL "
            "(or use `sluice up`, which starts an embedded PostgreSQL)."
        )
    return url


api_url = click.option(
    "--api-url",
    envvar="SLUICE_API_URL",
    metavar="URL",
    help="API base URL [env: SLUICE_API_URL; default: the running `sluice up`, "
    "else http://127.0.0.1:8000].",
)
token = click.option(
    "--token",
    envvar="SLUICE_TOKEN",
    metavar="JWT",
    help="Bearer token [env: SLUICE_TOKEN; default: the admin token of `sluice up`].",
)


def api_call(coroutine_function):
    """Run `coroutine_function(client, **kwargs)` with a client from the common options,
    turning API errors into a clean CLI error."""
    import asyncio
    import functools

    from sluice.client import ApiError, Client, Unreachable, resolve_api_url, resolve_token

    @api_url
    @token
    @functools.wraps(coroutine_function)
    def command(api_url: str | None, token: str | None, **kwargs):
        async def go():
            async with Client(resolve_api_url(api_url), resolve_token(token)) as client:
                return await coroutine_function(client, **kwargs)

        try:
            return asyncio.run(go())
        except (ApiError, Unreachable) as exc:
            raise click.ClickException(str(exc)) from None

    return command
