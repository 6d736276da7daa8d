"""The Dockerfile and the wheel it installs.

There is no container engine here, so the Dockerfile is checked as parsed, and
the wheel is built and installed the way the image's builder stage does it,
then run from its installed location (not the source tree) against a fresh
database: that is what proves the image can migrate and find its SQL.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import dockerfile
import psycopg
import pytest
from psycopg import sql

from sluice.core.queries import QUERIES

Instruction = dockerfile.Command


@pytest.fixture(scope="module")
def stages(repo) -> dict[str, list[Instruction]]:
    """Build stages by name (`FROM ... AS name`); "" holds the ARGs before the first.

    Parsed by BuildKit's own parser (the `dockerfile` package wraps it)."""
    found: dict[str, list[Instruction]] = {"": []}
    current = ""
    for instruction in dockerfile.parse_file(str(repo / "Dockerfile")):
        if instruction.cmd == "FROM":
            _base, as_, name = instruction.value
            assert as_.upper() == "AS", f"every stage is named: {instruction.original}"
            current = name
            found[current] = []
        found[current].append(instruction)
    return found


def all_of(stage: list[Instruction], cmd: str) -> list[Instruction]:
    return [i for i in stage if i.cmd == cmd]


def last(stage: list[Instruction], cmd: str) -> Instruction:
    found = all_of(stage, cmd)
    assert found, f"no {cmd}"
    return found[-1]


@pytest.fixture(scope="module")
def runtime(stages) -> list[Instruction]:
    return list(stages.values())[-1]


def test_multi_stage_build_on_python_311_slim(stages):
    assert list(stages)[1:] == ["builder", "runtime"]
    global_args = dict(a.value[0].split("=", 1) for a in all_of(stages[""], "ARG"))
    for name in ("builder", "runtime"):
        base = stages[name][0].value[0]
        base = global_args.get(base.strip("${}"), base)
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base


def test_builder_makes_wheels_and_runtime_installs_only_those(stages, runtime):
    assert any("pip wheel" in run.value[0] for run in all_of(stages["builder"], "RUN"))
    (install,) = [run for run in all_of(runtime, "RUN") if "pip install" in run.value[0]]
    assert any("from=builder" in flag for flag in install.flags)
    assert "--no-index" in install.value[0]
    assert not all_of(runtime, "COPY"), "no source tree in the runtime image"


def test_runtime_runs_as_a_non_root_user(runtime):
    uid = last(runtime, "USER").value[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric uid, so runAsNonRoot can check it"
    (useradd,) = [run for run in all_of(runtime, "RUN") if "useradd" in run.value[0]]
    assert f"--uid {uid}" in useradd.value[0]


def environment(stage: list[Instruction]) -> dict[str, str]:
    env = {}
    for instruction in all_of(stage, "ENV"):
        pairs = instruction.value
        env.update(zip(pairs[::2], pairs[1::2], strict=True))
    return env


def test_healthcheck_uses_python_against_health(runtime):
    healthcheck = last(runtime, "HEALTHCHECK")
    assert healthcheck.value[:3] == ("CMD", "python", "-c")  # the slim image has no curl
    assert "urllib.request" in healthcheck.value[3]
    cmd = last(runtime, "CMD").value
    port = cmd[cmd.index("--port") + 1]
    assert environment(runtime)["HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/health"


def test_entrypoint_is_sluice_under_an_init(runtime):
    entrypoint = last(runtime, "ENTRYPOINT")
    assert entrypoint.json
    assert entrypoint.value[-1] == "sluice"
    assert "tini" in entrypoint.value[0]
    cmd = last(runtime, "CMD")
    # Reachable from outside the container.
    assert cmd.value[:3] == ("api", "--host", "0.0.0.0")  # noqa: S104
    assert set(last(runtime, "EXPOSE").value) == {"8000", "9100"}


def package_dirs(repo: Path) -> dict[str, str]:
    """Installed package name -> folder of the checkout (pyproject.toml's package-dir)."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    return project["tool"]["setuptools"]["package-dir"]


def wheel_inputs(repo: Path) -> list[str]:
    """Top-level paths the wheel is built from."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    return [*package_dirs(repo).values(), "pyproject.toml", project["project"]["readme"]]


def test_dockerignore_keeps_out_clutter_but_not_the_wheels_inputs(repo):
    patterns = [
        line.strip()
        for line in (repo / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", "tests"} <= set(patterns)
    for path in wheel_inputs(repo):
        assert not any(fnmatch.fnmatch(path, p) for p in patterns), f"{path} is ignored"


IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]


@pytest.fixture(scope="module")
def wheel(repo, tmp_path_factory) -> Path:
    # Built from a copy of only the wheel's inputs, as the image's build context
    # is: that proves the list complete, and setuptools' build/ stays out of the tree.
    source = tmp_path_factory.mktemp("source")
    for name in wheel_inputs(repo):
        if (repo / name).is_dir():
            shutil.copytree(repo / name, source / name, ignore=IGNORED)
        else:
            shutil.copy2(repo / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*PIP_WHEEL, "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = out.glob("sluice-*.whl")
    return built


def test_wheel_contains_everything_needed_at_run_time(wheel, repo):
    """Every file of the package folders is in the wheel, under its installed
    name (app/ is `sluice/`, worker/ is `sluice/worker/` ...)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    mapping = package_dirs(repo)
    needed = {
        f"{package.replace('.', '/')}/{path.relative_to(repo / folder).as_posix()}"
        for package, folder in mapping.items()
        for path in (repo / folder).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix != ".md"
        # a folder mapped to its own package is that package's, not its parent's
        and not any(
            path.is_relative_to(repo / other) for other in mapping.values() if other != folder
        )
    }
    assert any(n.startswith("sluice/sql/queries/") for n in needed)
    assert sorted(needed - names) == []
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "sluice = sluice.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_has_one_import_root(wheel):
    """A user project's own `app` or `worker` package is never shadowed by Sluice's."""
    tops = {
        name.split("/")[0]
        for name in zipfile.ZipFile(wheel).namelist()
        if ".dist-info/" not in name
    }
    assert tops == {"sluice"}


INSTALLED_MIGRATE = """
import sys
target = sys.argv[1]
import importlib
for name in ("app", "worker", "sql", "migrations"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"the wheel installed a top-level {name!r}")
import sluice, sluice.core.queries as queries
assert sluice.__file__.startswith(target), sluice.__file__
assert sluice.task and sluice.JobContext and sluice.NonRetryableError
print(",".join(sorted(queries.QUERIES)))
from sluice.cli import main
main(["migrate"], standalone_mode=False)
"""


@pytest.fixture
def empty_database(pg_server):
    """A new, empty database (not cloned from the migrated template)."""
    name = f"deploy_wheel_{os.getpid()}"
    database = sql.Identifier(name)
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(database))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
    yield pg_server.url(name)
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))


def test_installed_wheel_migrates_an_empty_database(wheel, empty_database, tmp_path):
    """What the image's `sluice migrate` does: the installed package finds its
    migrations and SQL files without the source tree."""
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "SLUICE_DATABASE_URL": empty_database}
    result = subprocess.run(
        [sys.executable, "-c", INSTALLED_MIGRATE, str(site)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    installed_queries = result.stdout.splitlines()[0].split(",")
    assert installed_queries == sorted(QUERIES)
    with psycopg.connect(empty_database) as conn:
        ready = conn.execute("SELECT sluice.enqueue('noop', '{}')").fetchone()[0]
        assert conn.execute("SELECT state FROM sluice.jobs WHERE id = %s", [ready]).fetchone() == (
            "ready",
        )
