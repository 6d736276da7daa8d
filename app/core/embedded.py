"""A private PostgreSQL cluster in a directory, for `sluice up`, the tests and the bench.

PostgreSQL refuses to run as root. When the current user is root, the cluster is
owned by and run as the `postgres` system user, and every directory above the data
directory must let that user through.

Layout of a data directory::

    <data_dir>/pgdata/          the cluster (initdb)
    <data_dir>/postgres.log     the server log
    <data_dir>/password         the superuser password for TCP clients (0600)

Clients in this process tree connect over the Unix socket (trusted: the socket
directory is private to the cluster's owner); other programs can use the TCP URL
with the password.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "postgres"
DATABASE = "sluice"
# A Unix socket path is limited to 107 bytes on Linux.
_MAX_SOCKET_PATH = 100


class EmbeddedError(RuntimeError):
    """The embedded cluster cannot be created or started; the message says what to do."""


def _candidate_bindirs() -> list[Path]:
    """Where PostgreSQL server binaries may be, most specific first."""
    candidates: list[Path] = []
    if env := os.environ.get("SLUICE_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            ).stdout.strip()
            candidates.append(Path(out))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        candidates.extend(p / "bin" for p in reversed(versions))
    return candidates


def find_bindir() -> Path:
    """Locate the PostgreSQL server binaries (initdb, pg_ctl, postgres).

    Looks at `SLUICE_PG_BINDIR`, then `pg_config --bindir`, then `PATH`, then the
    Debian/Ubuntu layout `/usr/lib/postgresql/<version>/bin` (newest first).
    """
    for bindir in _candidate_bindirs():
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise EmbeddedError(
        "No PostgreSQL server binaries (initdb, pg_ctl) were found.\n"
        "Install them (Debian/Ubuntu: `apt-get install postgresql`; macOS: "
        "`brew install postgresql@15`), or point SLUICE_PG_BINDIR at their directory,\n"
        "or set SLUICE_DATABASE_URL to use an existing PostgreSQL server instead."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """The account the server must run as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise EmbeddedError(
            "Running as root, but there is no `postgres` system user to run PostgreSQL as "
            "(PostgreSQL refuses to run as root). Create one (`useradd --system postgres`) "
            "or run Sluice as an ordinary user."
        ) from None


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Fail clearly when `user` cannot traverse every directory above `path`."""
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise EmbeddedError(
                f"The data directory {path} is inside {parent}, which the `{user.pw_name}` "
                f"user cannot enter (mode {stat.filemode(st.st_mode)}). PostgreSQL cannot run "
                f"as root, so it runs as `{user.pw_name}`. Choose a data directory it can "
                f"reach (--data-dir /var/lib/sluice) or allow it through "
                f"(chmod o+x {parent})."
            )


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster living in `data_dir`, started and stopped by this process.

    `settings` are extra server settings (`-c name=value`), for example
    `{"fsync": "off"}` for throwaway test clusters.
    """

    data_dir: Path
    port: int | None = None
    settings: dict[str, str] = field(default_factory=dict)
    bindir: Path = field(default_factory=find_bindir)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self._user = _server_user()
        self._socket_dir: Path | None = None

    # -- paths ---------------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "password"

    @property
    def socket_dir(self) -> Path:
        if self._socket_dir is None:
            raise EmbeddedError("the cluster is not running")
        return self._socket_dir

    # -- lifecycle -----------------------------------------------------------

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def init(self) -> None:
        """Create the cluster (initdb) unless the data directory already holds one."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _check_reachable(self.data_dir, self._user)
        self._own(self.data_dir)
        if self.initialized():
            return
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        # initdb reads the password from a file; hand it one only the server user can read.
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir, delete=False) as pw:
            pw.write(password + "\n")
        pwfile = Path(pw.name)
        self._own(pwfile)
        try:
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "--pgdata",
                    str(self.pgdata),
                    "--username",
                    SUPERUSER,
                    "--pwfile",
                    str(pwfile),
                    # Unix-socket clients are trusted: the socket lives in a directory
                    # only the cluster owner (and root) can enter. TCP needs the password.
                    "--auth-local",
                    "trust",
                    "--auth-host",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C.UTF-8",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> None:
        """Start the server (initialising the cluster first if needed) and create the database."""
        self.init()
        if self.running():
            # Left running by an earlier process that died: stop it so we own it.
            self.stop()
        self._socket_dir = self._pick_socket_dir()
        port = self.port or free_port()
        self.port = port
        options = [f"-p {port}", f"-k {self._socket_dir}", "-c listen_addresses=127.0.0.1"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        try:
            self._run(
                [
                    str(self.bindir / "pg_ctl"),
                    "--pgdata",
                    str(self.pgdata),
                    "--log",
                    str(self.logfile),
                    "--options",
                    " ".join(options),
                    "--wait",
                    "--timeout",
                    "60",
                    "start",
                ]
            )
        except EmbeddedError as exc:
            tail = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise EmbeddedError(f"{exc}\n--- {self.logfile} ---\n{tail}") from None
        self._create_database()

    def running(self) -> bool:
        if not self.initialized():
            return False
        result = self._run(
            [str(self.bindir / "pg_ctl"), "--pgdata", str(self.pgdata), "status"], check=False
        )
        return result.returncode == 0

    def stop(self) -> None:
        """Stop the server cleanly (fast shutdown: open transactions are rolled back)."""
        if not self.initialized():
            return
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "--pgdata",
                str(self.pgdata),
                "--mode",
                "fast",
                "--wait",
                "--timeout",
                "60",
                "stop",
            ],
            check=False,
        )
        if self._socket_dir is not None and self._socket_dir.parent != self.data_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connection strings --------------------------------------------------

    def url(self, dbname: str = DATABASE) -> str:
        """libpq URL over the Unix socket (no password needed)."""
        return (
            f"postgresql://{SUPERUSER}@/{dbname}"
            f"?host={quote(str(self.socket_dir), safe='')}&port={self.port}"
        )

    def tcp_url(self, dbname: str = DATABASE, *, with_password: bool = True) -> str:
        """libpq URL over TCP on 127.0.0.1, for programs outside this process tree."""
        password = (
            quote(self.password_file.read_text().strip(), safe="") if with_password else "********"
        )
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{dbname}"

    # -- internals -----------------------------------------------------------

    def _pick_socket_dir(self) -> Path:
        preferred = self.data_dir / "run"
        if len(str(preferred)) + len("/.s.PGSQL.65535") <= _MAX_SOCKET_PATH:
            preferred.mkdir(exist_ok=True)
            self._own(preferred)
            return preferred
        short = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
        self._own(short)
        return short

    def _own(self, path: Path) -> None:
        """Hand `path` to the server user and keep others out (PostgreSQL insists on 0700)."""
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)
        path.chmod(0o700 if path.is_dir() else 0o600)

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            check=False,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise EmbeddedError(
                f"{Path(argv[0]).name} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
