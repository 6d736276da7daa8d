"""`sluice up` from a fresh directory, the CLI against it, and a clean stop; one
`sluice up` per data directory (a second refuses, a crashed one is recovered);
`sluice token` beside it; metrics ports; Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from sluice.client import up_state
from sluice.core.embedded import EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parents[1]
SLUICE = str(Path(sys.executable).with_name("sluice"))

# Each test starts `sluice up` (90 s allowed) then runs jobs through it: 80 s on a
# loaded 2-core machine, past the default bound of 120 s under a little more load.
pytestmark = pytest.mark.timeout(600)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without SLUICE_* settings, but with the choice of PostgreSQL
    binaries (CI runs the suite on the wheel's too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    if "SLUICE_PG_BINDIR" in os.environ:
        env["SLUICE_PG_BINDIR"] = os.environ["SLUICE_PG_BINDIR"]
    env.update(extra)
    return env


class Up:
    """A `sluice up` process run from `directory`."""

    def __init__(self, directory: Path, port: int, *args: str, **env: str) -> None:
        self.directory = directory
        self.data_dir = directory / ".sluice"
        env = clean_env(
            **{
                "PYTHONPATH": str(ROOT),  # the example handlers
                "SLUICE_TASK_MODULES": "examples.handlers",
                "SLUICE_UP_WORKERS": "2",
                "SLUICE_LOG_LEVEL": "WARNING",
                **env,  # the caller's settings win
            }
        )
        self.log = directory / f"up-{time.monotonic_ns()}.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [SLUICE, "up", "--port", str(port), *args],
            cwd=directory,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while not (state := up_state(self.data_dir)) or "api_url" not in state:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sluice up did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self.state = state
        self.api_url = state["api_url"]
        self.token = (self.data_dir / "admin-token").read_text().strip()
        self.http = httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )

    def postmaster(self) -> int:
        return int(
            (self.data_dir / "postgres" / "pgdata" / "postmaster.pid").read_text().split()[0]
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = clean_env(SLUICE_DATA_DIR=str(self.data_dir))
        return subprocess.run(
            [SLUICE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            self._log_file.close()


def wait_for_job(up: Up, job_id: int, *states: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        job = up.http.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stayed {job['state']}"
        time.sleep(0.05)


@pytest.fixture
def directory():
    # A fresh directory the `postgres` user can reach (the server runs as it under root).
    path = Path(tempfile.mkdtemp(prefix="sluice-up-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_sluice_up_runs_jobs_stops_cleanly_and_keeps_them(directory):
    up = Up(directory, free_port())
    try:
        assert up.http.get("/health").status_code == 200
        assert up.http.get("/ready").status_code == 200
        # The README's example: a queue nobody named. sluice up's workers take every queue.
        created = up.http.post(
            "/api/v1/jobs", json={"task": "sleep", "queue": "mail", "payload": {"seconds": 0.1}}
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert wait_for_job(up, job_id, "succeeded", "failed")["state"] == "succeeded"
        workers = up.http.get("/api/v1/workers").json()["items"]
        assert [w["queues"] for w in workers] == [["*"], ["*"]]

        # The CLI against the running stack.
        run = up.cli("submit", "examples/fan_out_fan_in.yaml", "--wait")
        assert run.returncode == 0, run.stderr
        assert "succeeded" in run.stdout
        flaky = up.cli("submit", "examples/flaky_job.yaml", "--wait")
        assert flaky.returncode == 1
        flaky_id = int(flaky.stdout.split()[1])
        listed = up.cli("dlq", "list").stdout.splitlines()
        assert listed[0].split()[:3] == ["JOB", "TASK", "QUEUE"], listed
        assert [line for line in listed if line.split()[0] == str(flaky_id)], listed
        assert up.cli("dlq", "retry", str(flaky_id)).returncode == 0
        assert wait_for_job(up, flaky_id, "succeeded", "failed")["state"] == "succeeded"
        status = up.cli("status", str(flaky_id))
        assert "state=succeeded" in status.stdout and "worked on attempt 3" in status.stdout
        assert up.cli("queues", "pause", "default").returncode == 0
        assert up.http.get("/api/v1/queues/default").json()["paused"] is True
        assert up.cli("queues", "resume", "default").returncode == 0
        shown = up.cli("runs", "show", "1")
        assert "succeeded" in shown.stdout and "merge" in shown.stdout

        processes = {up.proc.pid, *descendants(up.proc.pid), up.postmaster()}
        assert len(processes) >= 5  # up, API, 2 workers, PostgreSQL (and its backends)
    finally:
        status = up.stop()
    assert status == 0, up.log.read_text()
    deadline = time.monotonic() + 10
    while (left := [pid for pid in processes if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"processes left behind: {left}"

    # A second start in the same directory finds the first run's jobs.
    again = Up(directory, free_port())
    try:
        job = again.http.get(f"/api/v1/jobs/{job_id}").json()
        assert job["state"] == "succeeded"
        assert again.http.get("/api/v1/runs/1").json()["run"]["state"] == "succeeded"
    finally:
        assert again.stop() == 0


def wait_until(predicate, what: str, within: float = 30):
    deadline = time.monotonic() + within
    while not (value := predicate()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return value


def listening(port: int) -> set[str]:
    """The local addresses a TCP socket listens on `port` from (IPv4, /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


@pytest.mark.slow
def test_a_second_up_on_a_directory_in_use_refuses_and_touches_nothing(directory):
    first = Up(directory, free_port())
    try:
        postmaster = first.postmaster()
        second = subprocess.run(
            [SLUICE, "up", "--port", str(free_port())],
            cwd=directory,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert "in use" in lines[0]
        assert f"pid {first.proc.pid}" in lines[0] and first.api_url in lines[0]
        assert "Sluice is up" not in second.stdout
        # The first one is untouched: same PostgreSQL, ready, running jobs.
        assert first.postmaster() == postmaster
        assert first.http.get("/ready").status_code == 200
        job = first.http.post("/api/v1/jobs", json={"task": "noop"}).json()
        assert wait_for_job(first, job["id"], "succeeded", "failed")["state"] == "succeeded"
        assert up_state(first.data_dir)["pid"] == first.proc.pid
    finally:
        assert first.stop() == 0, first.output()
    assert up_state(first.data_dir) is None  # stopped: nothing holds the directory


@pytest.mark.slow
def test_a_crashed_up_is_recovered_on_its_pinned_port_and_flags_unconsumed_queues(directory):
    pg_port = free_port()
    # Workers told to take `default` only (sluice up's take every queue otherwise).
    first = Up(directory, free_port(), "--pg-port", str(pg_port), "--queue", "default")
    try:
        assert f"127.0.0.1:{pg_port}/sluice" in first.state["database_url"]
        assert first.state["password_file"].endswith("password")
        banner = first.output()
        assert f'DATABASE_URL="postgresql://postgres:$(cat {first.state["password_file"]})' in (
            banner
        )
        # A job for a queue that sluice up's workers do not take.
        mail = first.http.post("/api/v1/jobs", json={"task": "noop", "queue": "mail"}).json()
        children = descendants(first.proc.pid)
        first.proc.kill()  # SIGKILL: no clean-up at all
        first.proc.wait()
        wait_until(lambda: not [p for p in children if alive(p)], "the children did not exit")
    finally:
        first.stop()
    assert json.loads((first.data_dir / "up.json").read_text())["pid"] == first.proc.pid
    assert up_state(first.data_dir) is None  # left behind, but nobody holds it

    # No --pg-port: the port of the last start is kept, so copied URLs still work.
    again = Up(directory, free_port(), SLUICE_QUEUES="default")
    try:
        output = again.output()
        assert f"last run here (pid {first.proc.pid}) did not stop cleanly" in output
        assert f"127.0.0.1:{pg_port}/sluice" in again.state["database_url"]
        assert again.http.get(f"/api/v1/jobs/{mail['id']}").json()["state"] == "ready"
        assert "queue mail has 1 waiting job(s) and no live worker takes it" in output
        with psycopg_connect(again) as conn:
            row = conn.execute(
                "SELECT ready, consumers, no_consumer FROM sluice.queue_stats WHERE queue = 'mail'"
            ).fetchone()
        assert row == (1, 0, True)
    finally:
        assert again.stop() == 0, again.output()


def psycopg_connect(up: Up):
    """A connection over TCP with the password, as the banner tells a user's own app."""
    import psycopg

    password = Path(up.state["password_file"]).read_text().strip()
    return psycopg.connect(up.state["database_url"].replace("********", password))


@pytest.mark.slow
def test_token_metrics_ports_and_ctrl_c_beside_sluice_up(directory):
    base = free_port()
    while base + 1 > 65535 or listening(base + 1):
        base = free_port()
    up = Up(directory, free_port(), SLUICE_METRICS_PORT=str(base), SLUICE_UP_GRACE="120")
    try:
        # `sluice token` finds the secret of `sluice up` as the other commands find the token.
        minted = up.cli("token", "--role", "viewer", "--tenant", "acme", "--ttl", "1h")
        assert minted.returncode == 0, minted.stderr
        viewer = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        assert up.http.get("/api/v1/jobs", headers=viewer).status_code == 200
        refused = up.http.post("/api/v1/jobs", json={"task": "noop"}, headers=viewer)
        assert refused.status_code == 403

        # One metrics port per worker, on loopback unless told otherwise.
        urls = [f"http://127.0.0.1:{base}/metrics", f"http://127.0.0.1:{base + 1}/metrics"]
        assert up.state["metrics_urls"] == urls
        for url in urls:
            assert url in up.output()
            assert "sluice_worker_jobs_running" in httpx.get(url).text
        assert listening(base) == {"127.0.0.1"} and listening(base + 1) == {"127.0.0.1"}

        # Ctrl-C: the first one drains (and says for how long), the second ends it.
        job = up.http.post("/api/v1/jobs", json={"task": "sleep", "payload": {"seconds": 600}})
        job_id = job.json()["id"]
        wait_for_job(up, job_id, "running")
        up.proc.send_signal(signal.SIGINT)
        wait_until(lambda: "stopping;" in up.output(), "no word about the first Ctrl-C")
        assert "running jobs get up to 120s to finish (Ctrl-C again" in up.output()
        assert up.proc.poll() is None  # still draining: the job runs on
        began = time.monotonic()
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(60) == 0, up.output()
        assert time.monotonic() - began < 30
        assert "stopping now; running jobs are handed back" in up.output()
    finally:
        up.stop()
    with EmbeddedPostgres(up.data_dir / "postgres") as pg, psycopg_connect_url(pg.url()) as conn:
        state, attempts = conn.execute(
            "SELECT state, (SELECT array_agg(outcome) FROM sluice.job_attempts a"
            "  WHERE a.job_id = j.id) FROM sluice.jobs j WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert (state, attempts) == ("ready", ["released"]), up.output()


def psycopg_connect_url(url: str):
    import psycopg

    return psycopg.connect(url)
