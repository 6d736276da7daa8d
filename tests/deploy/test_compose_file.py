"""compose.yaml: services wired the way `docker compose up --scale worker=N` needs."""

from __future__ import annotations

import re

import pytest

SLUICE_SERVICES = ("migrate", "api", "worker")
LONG_RUNNING = ("postgres", "api", "worker", "prometheus", "grafana")


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def test_the_stack_has_every_service(compose):
    assert set(compose["services"]) == {
        "postgres",
        "migrate",
        "api",
        "worker",
        "prometheus",
        "grafana",
    }


@pytest.mark.parametrize("name", ["postgres", "migrate", "api", "worker", "prometheus", "grafana"])
def test_every_service_has_an_image_or_a_build(compose, repo, name):
    service = compose["services"][name]
    assert service.get("image") or service.get("build")
    if "build" in service:
        context = (
            service["build"] if isinstance(service["build"], str) else service["build"]["context"]
        )
        assert (repo / context / "Dockerfile").is_file()


def test_sluice_services_share_one_image(compose):
    """Same build and same tag: Compose builds the image once for all three."""
    services = compose["services"]
    assert len({(services[s]["build"], services[s]["image"]) for s in SLUICE_SERVICES}) == 1


def test_postgres_is_15_with_a_readiness_healthcheck(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"].split(":")[1].startswith("15")
    check = healthcheck_text(postgres)
    assert "pg_isready" in check
    # Over TCP, so the image's init-time (socket-only) server does not count.
    assert "-h 127.0.0.1" in check


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck(compose, name):
    healthcheck = compose["services"][name]["healthcheck"]
    assert not healthcheck.get("disable")
    assert healthcheck["test"][0] in {"CMD", "CMD-SHELL"}
    assert healthcheck.get("interval")


def test_api_healthcheck_probes_its_own_health_endpoint(compose):
    api = compose["services"]["api"]
    port = api["command"][api["command"].index("--port") + 1]
    assert f"http://127.0.0.1:{port}/health" in healthcheck_text(api)
    assert "curl" not in healthcheck_text(api)  # the slim image has none


def test_migrate_is_one_shot_after_postgres(compose):
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["healthcheck"] == {"disable": True}
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_workers_start_after_migrations_complete(compose, name):
    depends_on = compose["services"][name]["depends_on"]
    assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
    assert depends_on["postgres"] == {"condition": "service_healthy"}


def test_worker_is_scalable(compose):
    """`--scale worker=N` fails on a fixed container name or a published host port."""
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"][0] == "worker"


def test_worker_metrics_port_agrees_everywhere(compose, compose_env, prometheus_config):
    port = compose_env["SLUICE_METRICS_PORT"]
    worker = compose["services"]["worker"]
    assert [str(p) for p in worker["expose"]] == [port]
    assert f"http://127.0.0.1:{port}/metrics" in healthcheck_text(worker)
    (job,) = [j for j in prometheus_config["scrape_configs"] if j["job_name"] == "sluice-worker"]
    assert [str(sd["port"]) for sd in job["dns_sd_configs"]] == [port]


def test_sluice_services_reach_the_compose_postgres(compose):
    postgres = compose["services"]["postgres"]["environment"]
    for name in SLUICE_SERVICES:
        env = compose["services"][name]["environment"]
        url = env["SLUICE_DATABASE_URL"]
        match = re.fullmatch(r"postgresql://(\w+):(\S+)@postgres:5432/(\w+)", url)
        assert match, url
        assert match.group(1) == postgres["POSTGRES_USER"]
        assert match.group(2) == postgres["POSTGRES_PASSWORD"]
        assert match.group(3) == postgres["POSTGRES_DB"]
        assert env["SLUICE_JWT_SECRET"]


def test_settings_file_keeps_secrets_out_and_shell_off(compose_env):
    assert compose_env["SLUICE_ALLOW_SHELL"] == "0"
    assert compose_env["SLUICE_LOG_FORMAT"] == "json"
    assert not {"SLUICE_DATABASE_URL", "SLUICE_JWT_SECRET"} & set(compose_env)


def test_published_ports_are_bound_to_loopback(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_bind_mounted_files_exist(compose, repo):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (repo / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)


def test_grafana_mounts_its_provisioning_and_dashboards(compose, repo):
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    dashboards = mounts["./deploy/grafana/dashboards"]
    assert home.startswith(dashboards + "/")
    assert (repo / "deploy/grafana/dashboards" / home.removeprefix(dashboards + "/")).is_file()
