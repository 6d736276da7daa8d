"""Issue 13's acceptance: a project of the user's own, with an `app/` package
(the usual name for a FastAPI or Flask service) and its handlers in
`app/tasks.py`, runs `sluice worker` and `sluice up` with
`SLUICE_TASK_MODULES=app.tasks`, and its job succeeds: the handler that runs is
the project's, never a module of Sluice's (which is `sluice` only).

Real processes, the installed `sluice` script, an environment without the
checkout on its path."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from sluice.core.embedded import free_port
from tests.test_up import SLUICE, Up, clean_env, directory, wait_for_job  # noqa: F401 - a fixture

TASKS = '''
"""The project's handlers."""

from pathlib import Path

from sluice import task

from app.greeting import GREETING


@task(name="project.greet")
def greet(payload, ctx):
    return {"greeting": f"{GREETING} {payload['name']}", "module": __name__,
            "file": str(Path(__file__).resolve())}
'''


def make_project(root: Path) -> Path:
    """A project directory: app/__init__.py, app/greeting.py, app/tasks.py."""
    package = root / "app"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""The project\'s own service."""\n')
    (package / "greeting.py").write_text('GREETING = "hello from the project"\n')
    (package / "tasks.py").write_text(TASKS)
    return root


def check_result(result: dict, project: Path, name: str) -> None:
    assert result["greeting"] == f"hello from the project {name}"
    assert result["module"] == "app.tasks"
    assert result["file"] == str((project / "app" / "tasks.py").resolve())


@pytest.mark.parametrize("how", ["from its directory", "with PYTHONPATH"])
def test_sluice_worker_runs_the_projects_own_app_tasks(database_url, tmp_path, how):
    project = make_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(
        SLUICE_TASK_MODULES="app.tasks", SLUICE_POLL_INTERVAL="1", SLUICE_LOG_LEVEL="INFO"
    )
    env.pop("PYTHONPATH", None)
    if how == "with PYTHONPATH":
        env["PYTHONPATH"] = str(project)
    log = tmp_path / "worker.log"
    with psycopg.connect(database_url, autocommit=True) as conn, open(log, "wb") as output:
        job_id = conn.execute(
            "SELECT sluice.enqueue('project.greet', %s)", (json.dumps({"name": "worker"}),)
        ).fetchone()[0]
        worker = subprocess.Popen(
            [SLUICE, "worker", "--database-url", database_url],
            cwd=project if how == "from its directory" else elsewhere,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                state, result, error = conn.execute(
                    "SELECT state::text, result, last_error FROM sluice.jobs WHERE id = %s",
                    (job_id,),
                ).fetchone()
                if state not in ("ready", "running") or worker.poll() is not None:
                    break
                assert time.monotonic() < deadline, f"job {job_id} stayed {state}"
                time.sleep(0.05)
        finally:
            worker.terminate()
            try:
                status = worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
                raise
    assert state == "succeeded", f"{state}: {error}\n{log.read_text(errors='replace')}"
    check_result(result, project, "worker")
    assert status == 0, log.read_text(errors="replace")


@pytest.mark.slow
def test_sluice_up_runs_the_projects_own_app_tasks(directory):  # noqa: F811
    project = make_project(directory)
    # The project on PYTHONPATH, not the checkout (Up's default, for the examples).
    up = Up(project, free_port(), SLUICE_TASK_MODULES="app.tasks", PYTHONPATH=str(project))
    try:
        created = up.http.post(
            "/api/v1/jobs", json={"task": "project.greet", "payload": {"name": "up"}}
        )
        assert created.status_code == 201, created.text
        job = wait_for_job(up, created.json()["id"], "succeeded", "failed")
        assert job["state"] == "succeeded", up.output()
        check_result(job["result"], project, "up")
    finally:
        assert up.stop() == 0, up.output()
