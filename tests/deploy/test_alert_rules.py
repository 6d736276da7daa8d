"""deploy/prometheus/alerts.yml: valid, tested with `promtool test rules`, loaded by
prometheus.yml and mounted by compose, and querying only metrics Sluice exports."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tests.deploy.test_grafana_dashboard import exposed, metric_names  # noqa: F401 - a fixture

RULES = "deploy/prometheus/alerts.yml"
RULE_TESTS = "deploy/prometheus/alerts.test.yml"
ALERTS = {
    "SluiceDeadLettersGrowing",
    "SluiceQueueWithoutWorker",
    "SluiceOldestReadyJobTooOld",
    "SluiceLeaseRescues",
}


def promtool_run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)


def rules(repo) -> list[dict]:
    document = yaml.safe_load((repo / RULES).read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules(promtool, repo):
    result = promtool_run(promtool, "check", "rules", str(repo / RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_when_it_should_and_only_then(promtool, repo):
    result = promtool_run(promtool, "test", "rules", str(repo / RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load((repo / RULE_TESTS).read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == {rule["alert"] for rule in rules(repo)} == ALERTS


def test_a_wrong_expectation_fails(promtool, repo, tmp_path):
    """Guards the test above: promtool really evaluates the rules."""
    shutil.copy(repo / RULES, tmp_path / "alerts.yml")
    broken = (repo / RULE_TESTS).read_text().replace("queue: mail", "queue: default")
    (tmp_path / "alerts.test.yml").write_text(broken)
    result = promtool_run(promtool, "test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode != 0


def test_prometheus_loads_the_rules_in_compose(prometheus_config, compose):
    assert prometheus_config["rule_files"] == ["alerts.yml"]
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_every_metric_an_alert_queries_is_exported(repo, exposed):  # noqa: F811
    for rule in rules(repo):
        names = metric_names(rule["expr"])
        assert names and names <= set(exposed), f"{rule['alert']}: {sorted(names - set(exposed))}"
