"""`sluice token`: mint a bearer token for local use."""

from __future__ import annotations

import re
from datetime import timedelta

import click

_TTL = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_ttl(value: str) -> timedelta:
    match = _TTL.match(value.strip())
    if not match:
        raise click.BadParameter("write a number and a unit: 30m, 1h, 7d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@click.command()
@click.option(
    "--role",
    envvar="SLUICE_TOKEN_ROLE",
    default="admin",
    show_default=True,
    type=click.Choice(["viewer", "submitter", "operator", "admin"]),
    help="Role the token grants [env: SLUICE_TOKEN_ROLE].",
)
@click.option(
    "--tenant",
    envvar="SLUICE_TOKEN_TENANT",
    default="default",
    show_default=True,
    help="Tenant the token is scoped to [env: SLUICE_TOKEN_TENANT].",
)
@click.option(
    "--ttl",
    envvar="SLUICE_TOKEN_TTL",
    default="1h",
    show_default=True,
    help="Lifetime: 30m, 1h, 7d [env: SLUICE_TOKEN_TTL].",
)
@click.option(
    "--subject",
    envvar="SLUICE_TOKEN_SUBJECT",
    default="sluice-cli",
    show_default=True,
    help="The `sub` claim [env: SLUICE_TOKEN_SUBJECT].",
)
@click.option(
    "--secret",
    envvar="SLUICE_JWT_SECRET",
    help="HS256 secret the API verifies with [env: SLUICE_JWT_SECRET; default: the one "
    "`sluice up` keeps in its data directory].",
)
def token(role: str, tenant: str, ttl: str, subject: str, secret: str | None) -> None:
    """Print an HS256 bearer token for ROLE in TENANT, valid for TTL.

    The secret is found the way the other commands find the API and token:
    --secret, then SLUICE_JWT_SECRET, then the secret of `sluice up` in
    SLUICE_DATA_DIR (default ./.sluice).
    """
    from sluice.auth.principal import Role
    from sluice.auth.tokens import mint
    from sluice.client import SECRET_FILE, data_dir
    from sluice.core.jobs import TENANT_NAME

    if not TENANT_NAME.match(tenant):
        raise click.BadParameter(TENANT_NAME.rule, param_hint="--tenant")
    if not secret:
        path = data_dir() / SECRET_FILE
        try:
            secret = path.read_text().strip()
        except OSError:
            raise click.UsageError(
                f"No secret: pass --secret or set SLUICE_JWT_SECRET (or run this beside "
                f"`sluice up`, which keeps one in {path})."
            ) from None
    click.echo(mint(secret, Role[role], tenant=tenant, ttl=parse_ttl(ttl), subject=subject))
