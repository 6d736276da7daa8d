"""The `sluice` click group. Each command lives in its own module and is imported
only when used, so `sluice migrate` does not pay for the web stack."""

from __future__ import annotations

import importlib

import click

from sluice.cli import COMMANDS


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sluice")
def main() -> None:
    """Sluice: a job queue and DAG scheduler whose engine is PostgreSQL.

    Every option can also be set with the SLUICE_* environment variable shown
    in its help.
    """
