"""Fixtures for the worker tests: workers in this process (fast, inspectable)
or as real `sluice worker` processes (for kill -9, SIGTERM, restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.core import migrate
from sluice.core.embedded import EmbeddedPostgres
from sluice.worker.runner import Worker
from tests.worker.helpers import ROOT, TASKS_MODULE, worker_settings


@contextlib.asynccontextmanager
async def running_workers() -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """`start(url, listen_url=None, **settings)` starts a worker in this event loop
    and answers it once it listens; each is stopped cleanly on the way out."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(url: str, *, listen_url: str | None = None, **overrides: Any) -> Worker:
        worker = Worker(worker_settings(**overrides), url, listen_url=listen_url)
        task = asyncio.create_task(worker.run())
        running.append((worker, task))
        started = asyncio.create_task(worker.started.wait())
        done, _ = await asyncio.wait(
            {started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            started.cancel()
            task.result()  # raises what stopped it
        assert started in done, "the worker did not start"
        assert worker.listener is not None
        await asyncio.wait_for(worker.listener.connected.wait(), 15)
        return worker

    try:
        yield start
    finally:
        for worker, _ in running:
            worker.stop(hurry=True)
        for _, task in running:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 20)


@pytest.fixture
async def start_worker(database_url: str) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start workers on the test's database (`start(**settings)`), in this event loop;
    each is stopped cleanly at the end of the test."""
    async with running_workers() as start:
        yield functools.partial(start, database_url)


class WorkerProcess:
    """A `sluice worker` subprocess."""

    def __init__(self, database_url: str, env: dict[str, str], args: list[str], log: Path) -> None:
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from sluice.cli import main; main()",
                "worker",
                "--database-url",
                database_url,
                *args,
            ],
            env=env,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def spawn_worker(database_url: str, tmp_path: Path):
    """Start `sluice worker` processes; any still running at the end are killed."""
    procs: list[WorkerProcess] = []

    def spawn(*args: str, url: str | None = None, **env: Any) -> WorkerProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        environ.update(
            {
                "PYTHONPATH": str(ROOT),
                "SLUICE_TASK_MODULES": TASKS_MODULE,
                "SLUICE_LEASE_TTL": "2",
                "SLUICE_HEARTBEAT_INTERVAL": "0.5",
                "SLUICE_POLL_INTERVAL": "1",
                "SLUICE_LEADER_TTL": "1.5",
                "SLUICE_RESCUE_INTERVAL": "0.3",
                "SLUICE_PROMOTE_INTERVAL": "0.1",
                "SLUICE_CRON_INTERVAL": "0.2",
                "SLUICE_LOG_LEVEL": "INFO",
            }
        )
        environ.update({k: str(v) for k, v in env.items()})
        proc = WorkerProcess(
            url or database_url, environ, list(args), tmp_path / f"worker-{len(procs)}.log"
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.proc.poll() is None:
            proc.signal(signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, to restart (or make read-only) at will."""
    data_dir = Path(tempfile.mkdtemp(prefix="sluice-restart-"))
    server = EmbeddedPostgres(
        data_dir,
        settings={"fsync": "off", "synchronous_commit": "off", "log_min_messages": "fatal"},
    )
    server.start()
    try:
        migrate.upgrade(server.url())
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
