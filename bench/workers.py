"""Worker processes for a scenario: real `sluice worker` processes, as deployed.

Each is `python -m sluice worker` with the bench's handlers (bench.tasks) loaded
and its settings in SLUICE_* variables, so a scenario measures exactly what a
user runs. Processes are started in their own session, stopped with SIGTERM
(or killed with SIGKILL by the soak), and never outlive the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import Mapping

from bench.harness import spawn
from sluice.core.db import connect

TASK_MODULE = "bench.tasks"


class WorkerGroup:
    """`count` worker processes with the same settings."""

    def __init__(
        self,
        url: str,
        *,
        count: int = 1,
        concurrency: int = 10,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.count = count
        self.concurrency = concurrency
        self.env = {
            "SLUICE_CONCURRENCY": str(concurrency),
            "SLUICE_TASK_MODULES": TASK_MODULE,
            "SLUICE_MAINTENANCE": "0",
            **(env or {}),
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start one more worker process."""
        proc = spawn(["worker"], self.url, self.env)
        self.procs.append(proc)
        return proc

    async def start(self) -> None:
        """Start the processes; return once each listens for jobs."""
        for _ in range(self.count):
            self.spawn()
        await self.wait_listening()

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    async def wait_listening(self, within: float = 60.0) -> None:
        """Until every live process has its LISTEN connection open (it then catches up
        on ready jobs at once), or raise if one exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with await connect(self.url, application_name="sluice-bench") as conn:
            while True:
                for p in self.procs:
                    if p.poll() is not None and p.returncode not in (0, -signal.SIGKILL):
                        raise RuntimeError(f"worker process {p.pid} exited with {p.returncode}")
                pids = [p.pid for p in self.alive()]
                cur = await conn.execute(
                    "SELECT count(DISTINCT w.pid) FROM sluice.workers w"
                    " WHERE w.pid = ANY(%s) AND w.stopped_at IS NULL",
                    (pids,),
                )
                registered = (await cur.fetchone())[0]
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = 'sluice-listener' AND state = 'idle'"
                    " AND datname = current_database()"
                )
                listening = (await cur.fetchone())[0]
                if registered >= len(pids) and listening >= len(pids):
                    return
                if loop.time() > deadline:
                    raise TimeoutError("worker processes did not start in time")
                await asyncio.sleep(0.05)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL one process (the soak's chaos)."""
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.procs.remove(proc)
        self.killed += 1

    async def stop(self, within: float = 30.0) -> None:
        """SIGTERM every process and wait; SIGKILL what is still there after `within` seconds."""
        for p in self.alive():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.alive() and loop.time() < deadline:  # noqa: ASYNC110 - polls processes
            await asyncio.sleep(0.05)
        for p in self.alive():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
            p.wait()
        self.procs.clear()

    async def __aenter__(self) -> WorkerGroup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
