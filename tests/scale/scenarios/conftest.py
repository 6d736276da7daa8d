"""The scenarios start real servers (PostgreSQL, PgBouncer, etcd, Patroni, HAProxy,
network namespaces) and take minutes: they run only through tests/scale/run.sh,
which sets SLUICE_SCALE=1 and a run directory, and cleans up after them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scale.scenarios.servers import Processes

if os.environ.get("SLUICE_SCALE") != "1":
    collect_ignore_glob = ["test_*.py"]

# Figures the scenarios measure, printed at the end of the run and kept in
# figures.json in the run directory.
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    given = os.environ.get("SLUICE_SCALE_DIR")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="sluice-scale-"))
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)  # the postgres user reaches its own folders inside
    yield path
    (path / "figures.json").write_text(json.dumps(FIGURES, indent=2, default=str))
    if not given:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def procs(run_dir: Path, request) -> Iterator[Processes]:
    """The processes of one scenario module, all stopped when it ends."""
    module_dir = run_dir / request.module.__name__.rsplit(".", 1)[-1]
    module_dir.mkdir(exist_ok=True)
    module_dir.chmod(0o755)
    procs = Processes(module_dir)
    # The runner kills by this list if the tests themselves cannot.
    procs.pidfile = run_dir / "pids"
    try:
        yield procs
    finally:
        procs.stop_all()


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("scale figures")
        for key, value in FIGURES.items():
            terminalreporter.write_line(f"{key}: {value}")
