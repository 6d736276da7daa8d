"""deploy/prometheus/prometheus.yml: valid for promtool, and scraping what compose runs."""

from __future__ import annotations

import subprocess


def test_promtool_accepts_the_config(promtool, repo):
    result = subprocess.run(
        [promtool, "check", "config", str(repo / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(promtool, tmp_path):
    """Guards the test above: promtool really reads the file and fails on errors."""
    broken = tmp_path / "prometheus.yml"
    broken.write_text("scrape_configs:\n  - job_name: x\n    dns_sd_configs:\n      - type: A\n")
    result = subprocess.run(
        [promtool, "check", "config", str(broken)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0


def test_api_is_scraped_on_its_compose_port(prometheus_config, compose):
    (job,) = [j for j in prometheus_config["scrape_configs"] if j["job_name"] == "sluice-api"]
    api = compose["services"]["api"]["command"]
    port = api[api.index("--port") + 1]
    assert job["static_configs"] == [{"targets": [f"api:{port}"]}]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_every_worker_replica_is_discovered_through_compose_dns(prometheus_config, compose):
    """Compose's DNS answers the service name with one A record per replica."""
    (job,) = [j for j in prometheus_config["scrape_configs"] if j["job_name"] == "sluice-worker"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    assert "worker" in compose["services"]
    assert sd["type"] == "A"
    assert job.get("metrics_path", "/metrics") == "/metrics"
