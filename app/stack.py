"""`sluice up`: the whole system in one process tree.

PostgreSQL (embedded, unless a database URL is given), migrations, then the API
and the workers as child processes of this one. Workers elect one maintenance
leader among themselves, as they would on many hosts. A stop request (Ctrl-C,
SIGTERM) stops the children gracefully, then PostgreSQL; a second one cuts the
grace period short.

The data directory keeps everything a restart needs: the cluster, the JWT
secret, the admin token, and `up.json` (API URL, database URL, pid) for the
other CLI commands run from the same directory. `up.json` is also the data
directory's lock: the running `sluice up` holds it (flock), so a second one
refuses at once and touches nothing, and a crashed one leaves it unlocked (the
kernel drops the lock with the process) for the next start to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import httpx

from sluice.client import DEFAULT_DATA_DIR, SECRET_FILE, STATE_FILE, TOKEN_FILE
from sluice.core import migrate
from sluice.core.config import load, parse_list, setting
from sluice.core.embedded import EmbeddedPostgres, port_in_use
from sluice.core.jobs import ANY_QUEUE
from sluice.core.logging import redact_url

TOKEN_TTL = timedelta(days=7)
# After the grace period, workers hand back what still runs; this is their time to do it.
HAND_BACK_SECONDS = 10.0


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a TCP port (1-65535), got {value}")
    return port


@dataclasses.dataclass(frozen=True)
class UpSettings:
    """Settings of `sluice up`."""

    data_dir: Path = setting(
        "SLUICE_DATA_DIR",
        Path(DEFAULT_DATA_DIR),
        "Where `sluice up` keeps its PostgreSQL cluster, JWT secret and admin token.",
        Path,
    )
    host: str = setting("SLUICE_API_HOST", "127.0.0.1", "Address the API listens on.")
    port: int = setting("SLUICE_API_PORT", 8000, "Port the API (and dashboard) listens on.", int)
    workers: int = setting("SLUICE_UP_WORKERS", 2, "Worker processes `sluice up` starts.", int)
    queues: tuple[str, ...] = setting(
        "SLUICE_QUEUES",
        (ANY_QUEUE,),
        f"Queues `sluice up`'s workers take, comma separated (default {ANY_QUEUE}: every "
        "queue, so a job enqueued to any queue runs).",
        parse_list,
    )
    grace: float = setting(
        "SLUICE_UP_GRACE",
        30.0,
        "Seconds running jobs get to finish after a stop request (a second Ctrl-C ends "
        "it); what still runs then is handed back to the queue.",
        float,
    )
    pg_port: int | None = setting(
        "SLUICE_PG_PORT",
        None,
        "TCP port of the embedded PostgreSQL (unset: the last start's port while it is "
        "free, else a free one).",
        _port,
    )

    def __post_init__(self) -> None:
        from sluice.worker.settings import check_queues

        check_queues(self.queues)


@dataclasses.dataclass
class Running:
    """What `sluice up` started, for the banner and for tests."""

    api_url: str
    token: str
    token_file: Path
    database_url: str
    database_display: str
    embedded: bool
    psql: str | None = None
    password_file: Path | None = None
    postgres_version: str | None = None
    metrics_urls: list[str] = dataclasses.field(default_factory=list)
    # Queues with waiting jobs that no live worker takes (sluice.queue_stats.no_consumer).
    unconsumed: list[Any] = dataclasses.field(default_factory=list)


class StackError(RuntimeError):
    """The stack could not start; the message says why."""


class DataDirInUse(StackError):
    """Another `sluice up` runs on the data directory."""


def die_with_parent() -> None:
    """In a child (a `preexec_fn`): get SIGTERM if the parent dies (Linux), so
    nothing it started is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _read_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(48)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


class DataDirLock:
    """The data directory's `up.json`, locked (flock) for as long as this process runs."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE
        self._file: IO[str] | None = None
        self.previous: dict[str, Any] = {}

    def acquire(self) -> None:
        """Take the lock, or raise DataDirInUse naming the process that has it.

        `previous` is what an earlier run left: non-empty when it did not stop
        cleanly (killed, crashed), whose PostgreSQL may still run.
        """
        file = self.path.open("a+")
        for attempt in range(3):
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # A CLI command checking whether we run holds a shared lock for
                # an instant (sluice.client.held): look twice before refusing.
                if attempt < 2:
                    time.sleep(0.05)
        else:
            file.seek(0)
            state = _parse(file.read())
            file.close()
            where = state.get("api_url") or "still starting"
            pid = state.get("pid", "?")
            raise DataDirInUse(
                f"{self.path.parent} is in use by another sluice up (pid {pid}, {where}); "
                f"stop it first (Ctrl-C in its terminal, or kill {pid}) or use another "
                "--data-dir."
            ) from None
        file.seek(0)
        self.previous = _parse(file.read())
        self._file = file
        self.write({"pid": os.getpid()})

    def write(self, state: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(state, indent=2) + "\n")
        self._file.flush()

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        """Empty the file (a clean stop leaves nothing to recover) and drop the lock."""
        if self._file is not None:
            self._file.truncate(0)
            self._file.close()
            self._file = None


async def _finish_in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a thread; when cancelled (Ctrl-C while starting), wait for
    the thread to finish first, so that what it started is there to be stopped."""
    future = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


def _parse(text: str) -> dict[str, Any]:
    try:
        state = json.loads(text)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


class Stack:
    """Starts and stops PostgreSQL, the API and the workers."""

    def __init__(
        self,
        settings: UpSettings,
        database_url: str | None,
        *,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.absolute()
        self.external_url = database_url
        self.postgres: EmbeddedPostgres | None = None
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.lock = DataDirLock(self.data_dir)
        self._say = say

    def _metrics_ports(self) -> list[int]:
        """One metrics port per worker: SLUICE_METRICS_PORT for the first, then the next ones."""
        from sluice.worker.settings import WorkerSettings

        base = load(WorkerSettings).metrics_port
        return [] if base is None else [base + n for n in range(self.settings.workers)]

    def _check_ports(self, metrics_host: str) -> None:
        wanted = [(self.settings.host, self.settings.port, "the API (--port)")]
        wanted += [(metrics_host, p, "worker metrics (SLUICE_METRICS_PORT)") for p in
                   self._metrics_ports()]  # fmt: skip
        for host, port, what in wanted:
            if port > 65535 or port_in_use(port, "0.0.0.0" if host in ("", "::") else host):  # noqa: S104
                raise StackError(f"port {port} on {host}, for {what}, is in use or invalid")

    async def start(self) -> Running:
        """Bring everything up; returns once the API answers and every worker registered."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        if self.lock.previous:
            self._say(
                f"sluice up: the last run here (pid {self.lock.previous.get('pid', '?')}) did "
                "not stop cleanly; recovering its database."
            )
        from sluice.worker.settings import WorkerSettings

        metrics_host = load(WorkerSettings).metrics_host
        self._check_ports(metrics_host)
        running = Running("", "", Path(), "", "", embedded=self.external_url is None)
        if self.external_url:
            url = self.external_url
            running.database_display = redact_url(url) or ""
        else:
            # The cluster lives in <data_dir>/postgres; the rest of the data dir
            # (secret, token) stays ours even when the server runs as another user.
            self.postgres = pg = EmbeddedPostgres(
                self.data_dir / "postgres", port=self.settings.pg_port
            )
            await _finish_in_thread(pg.start)
            url = pg.url()
            running.database_display = pg.tcp_url(with_password=False)
            running.password_file = pg.password_file
            running.postgres_version = pg.version
            # The socket directory is private to the cluster's owner: no password needed.
            running.psql = f"psql -h {pg.socket_dir} -p {pg.port} -U postgres sluice"
        running.database_url = url
        await _finish_in_thread(migrate.upgrade, url)

        secret = os.environ.get("SLUICE_JWT_SECRET") or _read_or_create_secret(
            self.data_dir / SECRET_FILE
        )
        from sluice.auth.principal import Role
        from sluice.auth.tokens import mint

        running.token = mint(secret, Role.admin, subject="sluice-up", ttl=TOKEN_TTL)
        running.token_file = self.data_dir / TOKEN_FILE
        running.token_file.write_text(running.token + "\n")
        running.token_file.chmod(0o600)

        env = {
            **os.environ,
            "SLUICE_DATABASE_URL": url,
            "SLUICE_JWT_SECRET": secret,
            "SLUICE_QUEUES": ",".join(self.settings.queues),
        }
        # The workers' own grace is ours, unless set for them explicitly.
        env.setdefault("SLUICE_SHUTDOWN_GRACE", f"{self.settings.grace:g}s")
        host, port = self.settings.host, self.settings.port
        await self._spawn("api", ["api", "--host", host, "--port", str(port)], env)
        metrics_ports = self._metrics_ports()
        for n in range(1, self.settings.workers + 1):
            worker_env = dict(env)
            if metrics_ports:
                worker_env["SLUICE_METRICS_PORT"] = str(metrics_ports[n - 1])
            await self._spawn(f"worker-{n}", ["worker"], worker_env)
        shown = "127.0.0.1" if metrics_host in ("0.0.0.0", "::", "") else metrics_host  # noqa: S104
        running.metrics_urls = [f"http://{shown}:{p}/metrics" for p in metrics_ports]

        running.api_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
        try:
            await self._wait_for_api(running.api_url)
            running.unconsumed = await self._wait_for_workers(url)
        except TimeoutError:
            raise StackError(
                "the API or a worker did not come up within 60 s (their log is above)"
            ) from None
        state = {
            "pid": os.getpid(),
            "api_url": running.api_url,
            "token_file": str(running.token_file),
            "database_url": running.database_display,
            "password_file": str(running.password_file) if running.password_file else None,
            "metrics_urls": running.metrics_urls,
        }
        self.lock.write(state)
        return running

    async def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.children[name] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sluice",
            *args,
            env=env,
            # Own process group: a Ctrl-C in the terminal reaches only us, and we
            # stop the children in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def _check_children(self) -> None:
        for name, process in self.children.items():
            if process.returncode is not None:
                raise StackError(f"{name} exited with status {process.returncode} while starting")

    async def _wait_for_api(self, api_url: str, within: float = 60) -> None:
        async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(within):
            while True:
                self._check_children()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{api_url}/health")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    async def _wait_for_workers(self, url: str, within: float = 60) -> list[Any]:
        """Until every worker child is registered and alive; then the queues that have
        waiting jobs and no live consumer."""
        import psycopg

        from sluice.core import engine
        from sluice.core.db import connection_kwargs

        pids = {p.pid for name, p in self.children.items() if name.startswith("worker-")}
        me = socket.gethostname()
        async with (
            await psycopg.AsyncConnection.connect(url, **connection_kwargs()) as conn,
            asyncio.timeout(within),
        ):
            while True:
                self._check_children()
                rows = await engine.worker_list(conn, limit=10_000)
                if pids <= {w.pid for w in rows if w.alive and w.hostname == me}:
                    break
                await asyncio.sleep(0.1)
            return await engine.queue_unconsumed(conn)

    async def wait(self, stop: asyncio.Event) -> str | None:
        """Until `stop` is set (None) or a child exits on its own (its name)."""
        stopped = asyncio.ensure_future(stop.wait())
        exits = {asyncio.ensure_future(p.wait()): name for name, p in self.children.items()}
        done, _ = await asyncio.wait({stopped, *exits}, return_when=asyncio.FIRST_COMPLETED)
        for future in (stopped, *exits):
            if future not in done:
                future.cancel()
        return next((exits[f] for f in done if f in exits), None)

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        """Stop the children, then PostgreSQL.

        SIGTERM first: workers stop claiming and give running jobs the grace
        period. When `hurry` is set (a second Ctrl-C) workers get a second
        signal (SIGINT) and hand back what still runs; a child still there after the
        grace period and the hand-back time is killed.
        """
        hurry = hurry or asyncio.Event()
        self._signal_children()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.grace + HAND_BACK_SECONDS
        exited = asyncio.ensure_future(asyncio.gather(*(p.wait() for p in self.children.values())))
        hurried = asyncio.ensure_future(hurry.wait())
        try:
            await asyncio.wait(
                {exited, hurried},
                timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if hurry.is_set() and not exited.done():
                # SIGINT, not a second SIGTERM: standard signals do not queue, so two
                # SIGTERMs sent back to back (a second Ctrl-C before the first was
                # passed on) reach a child that was not scheduled in between as one.
                self._signal_children(signal.SIGINT)
                await asyncio.wait({exited}, timeout=HAND_BACK_SECONDS)
        finally:
            hurried.cancel()
        for process in self.children.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        await exited
        try:
            if self.postgres is not None:
                await asyncio.to_thread(self.postgres.stop)
        finally:
            self.lock.release()

    def _signal_children(self, sig: signal.Signals = signal.SIGTERM) -> None:
        for process in self.children.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)


async def run(
    settings: UpSettings,
    database_url: str | None,
    *,
    on_ready: Callable[[Running], None],
    on_child_exit: Callable[[str], None],
    say: Callable[[str], None] = lambda _: None,
) -> int:
    """Run the stack until SIGINT/SIGTERM; the exit status for the command.

    The first signal starts a graceful stop (and says how long it may take), a
    second one ends the grace period.
    """
    stack = Stack(settings, database_url, say=say)
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            say(
                f"sluice up: stopping; running jobs get up to {settings.grace:g}s to finish "
                "(Ctrl-C again to stop at once)."
            )
        elif not hurry.is_set():
            hurry.set()
            say("sluice up: stopping now; running jobs are handed back to their queues.")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        starting = asyncio.ensure_future(stack.start())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a stop request while starting
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return 0
        stopped.cancel()
        on_ready(starting.result())
        exited = await stack.wait(stop)
        if exited is not None:
            on_child_exit(exited)
            return 1
        return 0
    finally:
        if stack.lock.held:
            await stack.stop(hurry)
