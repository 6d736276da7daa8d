"""`python -m sluice` is the `sluice` command (used by `sluice up` to start its children)."""

from sluice.cli import main

main(prog_name="sluice")
