"""The servers the scenarios run against, each a local process on 127.0.0.1 (or
on an address inside a network namespace this run created): PostgreSQL, PgBouncer,
etcd + Patroni + HAProxy, and Sluice's own API and workers.

Every process is started in a session of its own and written to `pids` in the
run directory, so the runner (tests/scale/run.sh) can end exactly what this run
started, even when the tests die; namespaces carry the run's prefix for the same
reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from sluice.core.embedded import SUPERUSER, find_bindir, free_port

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "sluice-scale"  # a throwaway cluster on 127.0.0.1
TASKS_MODULE = "tests.scale.scenarios.tasks"
PG_USER = pwd.getpwnam("postgres") if os.geteuid() == 0 else None


def wait_until(condition: Callable[[], Any], within: float, what: str, every: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy; fail after `within` s."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(every)


class Processes:
    """The processes this run started; each in its own process group."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.pidfile = run_dir / "pids"
        self.procs: dict[str, subprocess.Popen] = {}

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        as_postgres: bool = False,
        env: dict[str, str] | None = None,
        netns: str | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen:
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        log = open(self.run_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        kwargs: dict[str, Any] = {}
        if as_postgres and PG_USER is not None:
            kwargs.update(user=PG_USER.pw_uid, group=PG_USER.pw_gid, extra_groups=[])
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd or self.run_dir,
            start_new_session=True,
            **kwargs,
        )
        log.close()
        self.procs[name] = proc
        with self.pidfile.open("a") as f:
            f.write(f"{proc.pid} {name}\n")
        return proc

    def log(self, name: str) -> str:
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group of `name` (the process and its children)."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def stop(self, name: str, timeout: float = 15) -> None:
        proc = self.procs.get(name)
        if proc is None:
            return
        if proc.poll() is None:
            self.kill(name, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(name, signal.SIGKILL)
                proc.wait(5)
        # Children left in the group (a postmaster whose parent died) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(name)


def own_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if PG_USER is not None:
        os.chown(path, PG_USER.pw_uid, PG_USER.pw_gid)
    path.chmod(0o700)
    return path


def run_as_postgres(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    if PG_USER is not None:
        kwargs.update(user=PG_USER.pw_uid, group=PG_USER.pw_gid, extra_groups=[])
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


def url(host: str, port: int, db: str = "sluice", **query: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return f"postgresql://{SUPERUSER}:{PASSWORD}@{host}:{port}/{db}" + (f"?{q}" if q else "")


def multi_host_url(ports: list[int], db: str = "sluice") -> str:
    """The form `pg_autoctl show uri` prints: host:port pairs, read-write target."""
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    return (
        f"postgresql://{SUPERUSER}:{PASSWORD}@{hosts}/{db}"
        "?target_session_attrs=read-write&connect_timeout=3"
    )


# --- a plain PostgreSQL --------------------------------------------------------------


@dataclass
class Postgres:
    """One PostgreSQL server with password auth on TCP (and trust on its socket)."""

    procs: Processes
    name: str
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    hba_networks: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.procs.run_dir / self.name

    def start(self) -> Postgres:
        bindir = find_bindir()
        own_dir(self.data)
        pwfile = self.procs.run_dir / f"{self.name}.pw"
        pwfile.write_text(PASSWORD)
        if PG_USER is not None:
            os.chown(pwfile, PG_USER.pw_uid, PG_USER.pw_gid)
        run_as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data / "pgdata"),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth-local",
                "trust",
                "--auth-host",
                "scram-sha-256",
                "-E",
                "UTF8",
            ]
        )
        with (self.data / "pgdata" / "pg_hba.conf").open("a") as f:
            for net in self.hba_networks:
                f.write(f"host all all {net} scram-sha-256\n")
        self.start_server()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE sluice")
        return self

    def start_server(self) -> None:
        """Start the (initialised) server and wait until it accepts connections."""
        self.procs.start(
            self.name,
            [
                str(find_bindir() / "postgres"),
                "-D",
                str(self.data / "pgdata"),
                "-p",
                str(self.port),
                "-k",
                str(self.data),
                "-c",
                f"listen_addresses={','.join(self.listen)}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            as_postgres=True,
        )
        wait_until(self._ready, 30, f"{self.name} to accept connections")

    def stop_server(self) -> None:
        """Fast shutdown: every session is cut, as in an outage."""
        self.procs.kill(self.name, signal.SIGINT)
        self.procs.procs[self.name].wait(30)

    def _ready(self) -> bool:
        with psycopg.connect(self.url("postgres"), connect_timeout=2):
            return True

    def url(self, db: str = "sluice", host: str = "127.0.0.1") -> str:
        return url(host, self.port, db)


# --- PgBouncer -----------------------------------------------------------------------


@dataclass
class PgBouncer:
    """PgBouncer in front of one server, in transaction mode."""

    procs: Processes
    server_port: int
    pool_mode: str = "transaction"
    port: int = field(default_factory=free_port)
    name: str = "pgbouncer"
    binary: str = "pgbouncer"
    max_prepared_statements: int = 0  # 1.21+: track prepared statements across servers

    def start(self) -> PgBouncer:
        d = own_dir(self.procs.run_dir / self.name)
        (d / "userlist.txt").write_text(f'"{SUPERUSER}" "{PASSWORD}"\n')
        ini = d / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"sluice = host=127.0.0.1 port={self.server_port} dbname=sluice\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {d / 'userlist.txt'}\n"
            f"pool_mode = {self.pool_mode}\ndefault_pool_size = 4\nmax_client_conn = 500\n"
            f"pidfile = {d / 'pgbouncer.pid'}\n"
            + (
                f"max_prepared_statements = {self.max_prepared_statements}\n"
                if self.max_prepared_statements
                else ""
            )
        )
        for path in d.iterdir():
            if PG_USER is not None:
                os.chown(path, PG_USER.pw_uid, PG_USER.pw_gid)
        self.procs.start(self.name, [self.binary, str(ini)], as_postgres=True)
        wait_until(self._ready, 20, "pgbouncer to accept connections")
        return self

    def _ready(self) -> bool:
        with psycopg.connect(self.url(), connect_timeout=2, prepare_threshold=None):
            return True

    def url(self) -> str:
        return url("127.0.0.1", self.port)

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return out.stdout.split("\n")[0].strip()


# --- Patroni + etcd + HAProxy --------------------------------------------------------


@dataclass
class PatroniCluster:
    """Two PostgreSQL nodes under Patroni (synchronous mode), etcd as the DCS, and
    HAProxy in front: one port that follows the primary, one for the replica."""

    procs: Processes
    ttl: int = 20
    nodes: tuple[str, ...] = ("pat1", "pat2")
    pg_ports: dict[str, int] = field(default_factory=dict)
    api_ports: dict[str, int] = field(default_factory=dict)
    primary_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)

    def start(self) -> PatroniCluster:
        run = self.procs.run_dir
        etcd_client, etcd_peer = free_port(), free_port()
        self.etcd = f"127.0.0.1:{etcd_client}"
        self.procs.start(
            "etcd",
            [
                "etcd",
                "--name",
                "e1",
                "--data-dir",
                str(own_dir(run / "etcd")),
                "--listen-client-urls",
                f"http://{self.etcd}",
                "--advertise-client-urls",
                f"http://{self.etcd}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"e1=http://127.0.0.1:{etcd_peer}",
                "--initial-cluster-state",
                "new",
            ],
            as_postgres=True,
        )
        for node in self.nodes:
            self.pg_ports[node] = free_port()
            self.api_ports[node] = free_port()
        for node in self.nodes:
            self._start_node(node)
            if node == self.nodes[0]:
                wait_until(lambda: self.leader() == self.nodes[0], 60, "the first leader")
        wait_until(self.sync_standby, 60, "a synchronous standby")
        self._start_haproxy()
        wait_until(self._primary_ready, 30, "the primary through HAProxy")
        with psycopg.connect(self.primary_url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE sluice")
        return self

    def config(self, node: str) -> Path:
        return self.procs.run_dir / f"{node}.yml"

    def _start_node(self, node: str) -> None:
        run = self.procs.run_dir
        data = own_dir(run / f"{node}-data")
        private = own_dir(run / "patroni")  # sockets and pgpass files, the server user's
        pg, api = self.pg_ports[node], self.api_ports[node]
        config = {
            "scope": f"sluice-{run.name}",
            "namespace": "/sluice/",
            "name": node,
            "restapi": {"listen": f"127.0.0.1:{api}", "connect_address": f"127.0.0.1:{api}"},
            "etcd3": {"hosts": self.etcd},
            "bootstrap": {
                "dcs": {
                    "ttl": self.ttl,
                    "loop_wait": 1,
                    "retry_timeout": 5,
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {"wal_log_hints": "on", "max_connections": 200},
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}],
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 scram-sha-256",
                    "host replication all 127.0.0.1/32 scram-sha-256",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{pg}",
                "connect_address": f"127.0.0.1:{pg}",
                "data_dir": str(data),
                "bin_dir": str(find_bindir()),
                "pgpass": str(private / f"{node}.pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": PASSWORD},
                    "replication": {"username": SUPERUSER, "password": PASSWORD},
                },
                "parameters": {"unix_socket_directories": str(private), "fsync": "off"},
            },
        }
        path = self.config(node)
        path.write_text(json.dumps(config))  # JSON is YAML
        if PG_USER is not None:
            os.chown(path, PG_USER.pw_uid, PG_USER.pw_gid)
        self.procs.start(node, ["patroni", str(path)], as_postgres=True)

    def _start_haproxy(self) -> None:
        lines = [
            "global",
            "    maxconn 500",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 1h",
            "    timeout server 1h",
            "    timeout check 1s",
        ]
        for section, port, check in (
            ("primary", self.primary_port, "/primary"),
            ("replica", self.replica_port, "/replica"),
        ):
            lines += [
                f"listen {section}",
                f"    bind 127.0.0.1:{port}",
                f"    option httpchk GET {check}",
                "    http-check expect status 200",
                "    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions",
            ]
            lines += [
                f"    server {n} 127.0.0.1:{self.pg_ports[n]} check port {self.api_ports[n]}"
                for n in self.nodes
            ]
        cfg = self.procs.run_dir / "haproxy.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        self.procs.start("haproxy", ["haproxy", "-db", "-f", str(cfg)])

    def _primary_ready(self) -> bool:
        # HAProxy starts with every server up until its checks say otherwise: ask a
        # few times that the primary port reaches the primary, the replica port not.
        for _ in range(6):
            for target, standby in ((self.primary_url, False), (self.replica_url, True)):
                with psycopg.connect(target("postgres"), connect_timeout=2) as conn:
                    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                    if row is None or row[0] != standby:
                        return False
        return True

    # -- state ---------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["patronictl", "-c", str(self.config(self.nodes[0])), "list", "-f", "json"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return json.loads(out.stdout) if out.returncode == 0 else []

    def leader(self) -> str | None:
        for m in self.members():
            if m.get("Role") == "Leader" and m.get("State") == "running":
                return m["Member"]
        return None

    def sync_standby(self) -> str | None:
        for m in self.members():
            if m.get("Role") == "Sync Standby" and m.get("State") in ("streaming", "running"):
                return m["Member"]
        return None

    def other(self, node: str) -> str:
        return next(n for n in self.nodes if n != node)

    # -- URLs ----------------------------------------------------------------

    def primary_url(self, db: str = "sluice") -> str:
        """Through HAProxy: always the primary."""
        return url("127.0.0.1", self.primary_port, db)

    def replica_url(self, db: str = "sluice") -> str:
        """Through HAProxy: the standby."""
        return url("127.0.0.1", self.replica_port, db)

    def multi_host_url(self, db: str = "sluice") -> str:
        return multi_host_url([self.pg_ports[n] for n in self.nodes], db)

    def node_url(self, node: str, db: str = "sluice") -> str:
        """One fixed host: after a failover it may be a standby."""
        return url("127.0.0.1", self.pg_ports[node], db)

    # -- failovers -----------------------------------------------------------

    def switchover(self) -> str:
        """A planned switchover to the synchronous standby; returns the new leader."""
        leader = self.leader()
        assert leader is not None
        candidate = self.other(leader)
        subprocess.run(
            [
                "patronictl",
                "-c",
                str(self.config(leader)),
                "switchover",
                "--leader",
                leader,
                "--candidate",
                candidate,
                "--force",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(lambda: self.leader() == candidate, 60, f"{candidate} to lead")
        return candidate

    def crash_leader(self) -> str:
        """kill -9 the leader's Patroni and PostgreSQL (a lost host); returns its name."""
        leader = self.leader()
        assert leader is not None
        self.procs.kill(leader)
        postmaster = self.procs.run_dir / f"{leader}-data" / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(postmaster.read_text().split()[0]), signal.SIGKILL)
        return leader

    def restart_node(self, node: str) -> None:
        """Bring a crashed node back (it rejoins as a standby, rewound if needed)."""
        self.procs.procs.pop(node, None)
        self._start_node(node)


# --- Sluice processes -----------------------------------------------------------------


def sluice_env(**settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "SLUICE_TASK_MODULES": TASKS_MODULE,
            "SLUICE_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({f"SLUICE_{k.upper()}": str(v) for k, v in settings.items() if v is not None})
    return env


def start_sluice(
    procs: Processes, name: str, args: list[str], netns: str | None = None, **settings: Any
) -> subprocess.Popen:
    return procs.start(
        name,
        [sys.executable, "-m", "sluice", *args],
        env=sluice_env(**settings),
        netns=netns,
        cwd=ROOT,
    )


def migrate(database_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "migrate"],
        env=sluice_env(database_url=database_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


# --- hosts in network namespaces --------------------------------------------------------


@dataclass
class Link:
    """A veth pair between the root namespace and a host's namespace."""

    ns: str
    root_dev: str
    ns_dev: str
    root_addr: str
    ns_addr: str

    def cut(self) -> None:
        """The cable is pulled: nothing passes either way, and no one is told."""
        subprocess.run(["ip", "-n", self.ns, "link", "set", self.ns_dev, "down"], check=True)

    def heal(self) -> None:
        subprocess.run(["ip", "-n", self.ns, "link", "set", self.ns_dev, "up"], check=True)


@dataclass
class Host:
    """A network namespace standing for another machine."""

    ns: str
    links: list[Link]


class Namespaces:
    """The network namespaces of this run. Addresses come from 198.18.0.0/15 (set
    aside for network tests), one /30 per link; nothing is routed beyond the links,
    so no packet leaves this machine."""

    def __init__(self, procs: Processes) -> None:
        import secrets

        self.prefix = "sl" + secrets.token_hex(2)
        self.record = procs.pidfile.parent / "netns"
        self.hosts: list[Host] = []
        self._subnet = 0

    def host(self, name: str, links: int = 1) -> Host:
        ns = f"{self.prefix}{name}"
        with self.record.open("a") as f:
            f.write(ns + "\n")
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        made = []
        for _ in range(links):
            self._subnet += 1
            k = self._subnet
            root_dev, ns_dev = f"{self.prefix}{k}r", f"{self.prefix}{k}n"
            base = f"198.18.{k // 64}.{(k % 64) * 4}"
            octets = base.rsplit(".", 1)
            root_addr = f"{octets[0]}.{int(octets[1]) + 1}"
            ns_addr = f"{octets[0]}.{int(octets[1]) + 2}"
            for cmd in (
                ["ip", "link", "add", root_dev, "type", "veth", "peer", "name", ns_dev],
                ["ip", "link", "set", ns_dev, "netns", ns],
                ["ip", "addr", "add", f"{root_addr}/30", "dev", root_dev],
                ["ip", "link", "set", root_dev, "up"],
                ["ip", "-n", ns, "addr", "add", f"{ns_addr}/30", "dev", ns_dev],
                ["ip", "-n", ns, "link", "set", ns_dev, "up"],
            ):
                subprocess.run(cmd, check=True)
            made.append(Link(ns, root_dev, ns_dev, root_addr, ns_addr))
        host = Host(ns, made)
        self.hosts.append(host)
        return host

    def delete_all(self) -> None:
        for host in self.hosts:
            # Deleting the namespace deletes its end of each veth, and so the pair.
            subprocess.run(["ip", "netns", "delete", host.ns], check=False)
        self.hosts = []
