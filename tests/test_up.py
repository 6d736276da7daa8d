"""`sluice up` from a fresh directory, the CLI against it, and a clean stop."""

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

from sluice.core.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
SLUICE = str(Path(sys.executable).with_name("sluice"))


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


class Up:
    """A `sluice up` process run from `directory`."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.data_dir = directory / ".sluice"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env.update(
            PYTHONPATH=str(ROOT),  # the example handlers
            SLUICE_TASK_MODULES="examples.handlers",
            SLUICE_UP_WORKERS="2",
            SLUICE_LOG_LEVEL="WARNING",
        )
        self.log = directory / f"up-{time.monotonic_ns()}.log"
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [SLUICE, "up", "--port", str(port)],
            cwd=directory,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        state = self.data_dir / "up.json"
        while not state.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sluice up did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self.api_url = json.loads(state.read_text())["api_url"]
        self.token = (self.data_dir / "admin-token").read_text().strip()
        self.http = httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )

    def postmaster(self) -> int:
        return int(
            (self.data_dir / "postgres" / "pgdata" / "postmaster.pid").read_text().split()[0]
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env["SLUICE_DATA_DIR"] = str(self.data_dir)
        return subprocess.run(
            [SLUICE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    def stop(self) -> int:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
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
        created = up.http.post("/api/v1/jobs", json={"task": "sleep", "payload": {"seconds": 0.1}})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        assert wait_for_job(up, job_id, "succeeded", "failed")["state"] == "succeeded"

        # The CLI against the running stack.
        run = up.cli("submit", "examples/fan_out_fan_in.yaml", "--wait")
        assert run.returncode == 0, run.stderr
        assert "succeeded" in run.stdout
        flaky = up.cli("submit", "examples/flaky_job.yaml", "--wait")
        assert flaky.returncode == 1
        flaky_id = int(flaky.stdout.split()[1])
        listed = up.cli("dlq", "list")
        assert f"job {flaky_id}" in listed.stdout, listed.stdout + listed.stderr
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
