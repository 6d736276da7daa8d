"""CPU time spent by the worker processes and by PostgreSQL during a phase.

On a shared machine, jobs/s moves with whatever else runs; CPU time per job
barely does, so it is the figure to compare variants by. Read from /proc
(Linux), for PostgreSQL only when the bench started the server itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces: fields start after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process in `pids` (its threads included)."""
    times = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            times[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return times


def children(parent: int) -> list[int]:
    """The live processes whose parent is `parent`."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                fields = _stat(int(entry.name))
                if fields is not None and int(fields[1]) == parent:
                    found.append(int(entry.name))
    return found


def parent_of(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[1])


class CpuMeter:
    """CPU seconds used between `start()` and `stop()` by the worker processes and
    by the PostgreSQL server (the postmaster and its children: backends,
    autovacuum, WAL writer..., those that exited in between included)."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self._before: float | None = None

    def _server(self) -> float | None:
        """The server's CPU seconds so far: its live processes, plus the postmaster's
        own and what it collected from children that exited (cutime, cstime)."""
        if self.postmaster is None:
            return None
        fields = _stat(self.postmaster)
        if fields is None:
            return None
        own = sum(int(f) for f in fields[11:15]) / TICK
        return own + sum(cpu_seconds(children(self.postmaster)).values())

    def start(self) -> None:
        self._before = self._server()

    def stop(self, workers: Iterable[int]) -> dict[str, float | None]:
        after = self._server()
        server = None if after is None or self._before is None else after - self._before
        return {"workers_s": sum(cpu_seconds(workers).values()), "postgres_s": server}
