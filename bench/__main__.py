"""`python -m bench SCENARIO [options]`."""

from bench.cli import main

main(prog_name="python -m bench")
