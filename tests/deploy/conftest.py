"""Fixtures for the deployment artefacts (Dockerfile, compose, Prometheus,
Grafana, Kubernetes): these tests read the files as a deployer's tools would,
without a container engine or a cluster."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def read_yaml(relative: str) -> Any:
    return yaml.safe_load((REPO / relative).read_text())


def read_env_file(relative: str) -> dict[str, str]:
    """KEY=VALUE lines of a Docker env file (comments and blank lines skipped)."""
    env = {}
    for line in (REPO / relative).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """compose.yaml with YAML anchors and merge keys resolved (as Compose does)."""
    return read_yaml("compose.yaml")


@pytest.fixture(scope="session")
def compose_env(compose: dict[str, Any]) -> dict[str, str]:
    """The settings file every Sluice service of compose.yaml loads."""
    (env_file,) = {compose["services"][s]["env_file"] for s in ("migrate", "api", "worker")}
    return read_env_file(env_file)


@pytest.fixture(scope="session")
def prometheus_config() -> dict[str, Any]:
    return read_yaml("deploy/prometheus/prometheus.yml")


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    return path
