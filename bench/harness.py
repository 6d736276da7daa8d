"""What every scenario shares: the database, progress display, worker processes,
and the record it returns.

A scenario is `async def run(bench: Bench, **options) -> Record`. It fills
`figures` (the numbers of the issue's table, all positive), `checks` (counts
that must come out right, such as lost jobs), `details` (series and
breakdowns, for charts) and `options` (what it was asked to do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import platform
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from bench import database
from bench.cpu import CpuMeter, parent_of
from sluice.core.db import connect
from sluice.stack import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def spawn(args: list[str], url: str, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """`python -m sluice <args>` from this checkout on database `url`, quiet, in its
    own session (a Ctrl-C reaches only the bench), and ended if the bench dies."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "sluice", *args],
        env={
            **os.environ,
            "PYTHONPATH": path,
            "SLUICE_DATABASE_URL": url,
            "SLUICE_LOG_LEVEL": "WARNING",
            **(env or {}),
        },
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


@dataclasses.dataclass
class Record:
    """One scenario's results."""

    scenario: str
    figures: dict[str, float] = dataclasses.field(default_factory=dict)
    checks: dict[str, int] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: figure name -> human label with unit, for the markdown table.
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    #: PNG charts: file stem -> a function drawing on a matplotlib Figure.
    charts: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def figure(self, name: str, value: float, label: str) -> None:
        """Record one figure of the table."""
        self.figures[name] = round(float(value), 4)
        self.labels[name] = label


class Bench:
    """A bench session: one database, one console, shared by its scenarios."""

    def __init__(self, url: str, *, embedded: bool, console: Console | None = None) -> None:
        self.url = url
        self.embedded = embedded
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None

    # -- database ------------------------------------------------------------

    async def connect(self) -> psycopg.AsyncConnection:
        """A new autocommit connection (prepared statements on, as the worker uses)."""
        return await connect(self.url, application_name="sluice-bench")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        conn = await self.connect()
        try:
            yield conn
        finally:
            await conn.close()

    async def cpu_meter(self) -> CpuMeter:
        """A CPU meter for the worker processes and, if the bench started it, the server."""
        postmaster = None
        if self.embedded:
            async with self.connection() as conn:
                postmaster = parent_of(await database.scalar(conn, "SELECT pg_backend_pid()"))
        return CpuMeter(postmaster)

    async def reset(self) -> None:
        """Empty the Sluice tables: each scenario starts from an empty queue."""
        async with self.connection() as conn:
            await database.reset(conn)

    # -- progress ------------------------------------------------------------

    @contextlib.contextmanager
    def progress(self, description: str, total: float | None) -> Iterator[Step]:
        """A progress bar on stderr while a phase runs."""
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            owner = True
        else:
            owner = False
        task = self._progress.add_task(description, total=total)
        try:
            yield Step(self._progress, task)
        finally:
            self._progress.update(task, completed=total or 0, total=total or 0)
            if owner:
                self._progress.stop()
                self._progress = None

    def say(self, text: str, *, markup: bool = True) -> None:
        self.console.print(text, highlight=False, markup=markup, soft_wrap=True)


class Step:
    """One progress bar."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def update(self, completed: float, total: float | None = None) -> None:
        self._progress.update(self._task, completed=completed, total=total)


# -- the record's context ------------------------------------------------------


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model and load average at the start of the run."""
    model = platform.processor() or None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    return {
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "cpu_model": model,
        "load_average": list(os.getloadavg()),
        "platform": platform.platform(),
    }


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def sluice_version() -> dict[str, Any]:
    """The package version and, in a git checkout, the commit (and whether it was dirty)."""
    try:
        package = version("sluice")
    except PackageNotFoundError:
        package = None
    commit = dirty = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {"version": package, "commit": commit, "dirty": dirty}


async def context(bench: Bench) -> dict[str, Any]:
    """Versions, server settings and machine, for the JSON record."""
    async with bench.connection() as conn:
        settings = await database.server_settings(conn)
        pg = await database.server_version(conn)
    return {
        "database": "embedded" if bench.embedded else "external (SLUICE_DATABASE_URL)",
        "versions": {
            "python": platform.python_version(),
            "postgresql": pg,
            "psycopg": psycopg.__version__,
            "sluice": sluice_version(),
        },
        "server_settings": settings,
        "machine": machine(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
