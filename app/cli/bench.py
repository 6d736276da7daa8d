"""`sluice bench`: the load-test harness, the same command as `python -m bench`.

The harness lives in the repository's bench/ package (it is not part of the
installed wheel), so this works from a source checkout.
"""

from __future__ import annotations

import click


def _command() -> click.Command:
    try:
        from bench.cli import main
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", "bench.cli"):
            raise

        @click.command(
            "bench",
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
            add_help_option=False,
        )
        def unavailable() -> None:
            """Load tests (needs a source checkout of Sluice)."""
            raise click.ClickException(
                "the bench harness is not installed: run `sluice bench` (or `python -m bench`) "
                "from a source checkout of Sluice, with `pip install -e '.[bench]'`"
            )

        return unavailable
    return main


bench = _command()
