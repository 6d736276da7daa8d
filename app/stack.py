"""`sluice up`: the whole system in one process tree.

PostgreSQL (embedded, unless a database URL is given), migrations, then the API
and the workers as child processes of this one. Workers elect one maintenance
leader among themselves, as they would on many hosts. A stop request (Ctrl-C,
SIGTERM) stops the children gracefully, then PostgreSQL.

The data directory keeps everything a restart needs: the cluster, the JWT
secret, and `up.json` (API URL, where the admin token is) for the other CLI
commands run from the same directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import os
import secrets
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx

from sluice.client import DEFAULT_DATA_DIR, STATE_FILE, TOKEN_FILE
from sluice.core import migrate
from sluice.core.config import setting
from sluice.core.embedded import EmbeddedPostgres
from sluice.core.logging import redact_url

SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name
TOKEN_TTL = timedelta(days=7)


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
    grace: float = setting(
        "SLUICE_UP_GRACE",
        30.0,
        "Seconds children get to stop after a stop request before they are killed.",
        float,
    )


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


class StackError(RuntimeError):
    """The stack could not start; the message says why."""


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


class Stack:
    """Starts and stops PostgreSQL, the API and the workers."""

    def __init__(self, settings: UpSettings, database_url: str | None) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.absolute()
        self.external_url = database_url
        self.postgres: EmbeddedPostgres | None = None
        self.children: dict[str, asyncio.subprocess.Process] = {}

    async def start(self) -> Running:
        """Bring everything up; returns once the API answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        psql = None
        if self.external_url:
            url, display = self.external_url, redact_url(self.external_url)
        else:
            # The cluster lives in <data_dir>/postgres; the rest of the data dir
            # (secret, token) stays ours even when the server runs as `postgres`.
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres")
            await asyncio.to_thread(self.postgres.start)
            url = self.postgres.url()
            display = self.postgres.tcp_url(with_password=False)
            # The socket directory is private to the cluster's owner: no password needed.
            psql = f"psql -h {self.postgres.socket_dir} -p {self.postgres.port} -U postgres sluice"
        await asyncio.to_thread(migrate.upgrade, url)

        secret = os.environ.get("SLUICE_JWT_SECRET") or _read_or_create_secret(
            self.data_dir / SECRET_FILE
        )
        from sluice.auth.principal import Role
        from sluice.auth.tokens import mint

        token = mint(secret, Role.admin, subject="sluice-up", ttl=TOKEN_TTL)
        token_file = self.data_dir / TOKEN_FILE
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)

        env = {**os.environ, "SLUICE_DATABASE_URL": url, "SLUICE_JWT_SECRET": secret}
        host, port = self.settings.host, self.settings.port
        await self._spawn("api", ["api", "--host", host, "--port", str(port)], env)
        for n in range(1, self.settings.workers + 1):
            await self._spawn(f"worker-{n}", ["worker"], env)

        api_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
        await self._wait_for_api(api_url)
        state = {"api_url": api_url, "token_file": str(token_file), "pid": os.getpid()}
        (self.data_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        return Running(api_url, token, token_file, url, display, self.postgres is not None, psql)

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

    async def _wait_for_api(self, api_url: str, within: float = 60) -> None:
        async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(within):
            while True:
                api = self.children["api"]
                if api.returncode is not None:
                    raise StackError(f"the API exited with status {api.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{api_url}/health")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    async def wait(self, stop: asyncio.Event) -> str | None:
        """Until `stop` is set (None) or a child exits on its own (its name)."""
        stopped = asyncio.ensure_future(stop.wait())
        exits = {asyncio.ensure_future(p.wait()): name for name, p in self.children.items()}
        done, _ = await asyncio.wait({stopped, *exits}, return_when=asyncio.FIRST_COMPLETED)
        for future in (stopped, *exits):
            if future not in done:
                future.cancel()
        return next((exits[f] for f in done if f in exits), None)

    async def stop(self) -> None:
        """Stop the children (SIGTERM, then SIGKILL after the grace period), then PostgreSQL."""
        for process in self.children.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in self.children.values():
            try:
                await asyncio.wait_for(process.wait(), self.settings.grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / STATE_FILE).unlink()


async def run(
    settings: UpSettings,
    database_url: str | None,
    *,
    on_ready: Callable[[Running], None],
    on_child_exit: Callable[[str], None],
) -> int:
    """Run the stack until SIGINT/SIGTERM; the exit status for the command."""
    stack = Stack(settings, database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        on_ready(await stack.start())
        exited = await stack.wait(stop)
        if exited is not None:
            on_child_exit(exited)
            return 1
        return 0
    finally:
        await stack.stop()
