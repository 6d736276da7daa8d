"""`python -m app` is the `sluice` command (used by `sluice up` to start its children)."""

from app.cli import main

main(prog_name="sluice")
