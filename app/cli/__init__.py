"""The `sluice` command line. Each command lives in its own module and is
imported only when used, so `sluice migrate` does not pay for the web stack,
and `sluice worker` with no arguments does not even import click (see `main`)."""

from __future__ import annotations

import sys
from typing import Any

# command name -> "module:attribute"
COMMANDS = {
    "migrate": "sluice.cli.migrate:migrate",
    "api": "sluice.cli.api:api",
    "token": "sluice.cli.token:token",
    "up": "sluice.cli.up:up",
    "submit": "sluice.cli.submit:submit",
    "status": "sluice.cli.status:status",
    "dlq": "sluice.cli.dlq:dlq",
    "queues": "sluice.cli.queues:queues",
    "runs": "sluice.cli.runs:runs",
    "worker": "sluice.cli.worker:worker",
}


def _group() -> Any:
    from sluice.cli.group import main as group

    return group


class _Main:
    """The `sluice` command (the console script's `sluice.cli:main`): the click group
    of sluice.cli.group, but `sluice worker` given no arguments, with its settings
    in SLUICE_* variables (containers, `sluice up`, the bench), starts the worker
    without importing click, some 20 ms of its start-up to the first claim
    (issue 15). Anything else, CliRunner.invoke included, is the group's."""

    def __call__(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        if (sys.argv[1:] if args is None else list(args)) == ["worker"] and not extra:
            from sluice.cli.worker_process import run_from_environment

            if run_from_environment():
                return None
        return _group()(args, prog_name, **extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(_group(), name)


main = _Main()
