"""deploy/grafana: the provisioned datasource and the Sluice dashboard.

Every metric a panel queries must be one that `sluice.core.metrics` really
exposes, with the labels the query groups and filters by: a dashboard whose
query names a metric nobody exports shows "No data" forever, silently.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice.core import metrics
from sluice.core.engine import QueueDepth
from sluice.core.jobs import JOB_STATES

DASHBOARD = "deploy/grafana/dashboards/sluice.json"
# Series Prometheus adds itself (scrape health), and the labels it attaches to
# every scraped series.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}
# What Grafana substitutes for its variables, so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$queue": ".*"}


@pytest.fixture(scope="module")
def exposed() -> Iterator[dict[str, set[str]]]:
    """Sample name -> label names, from what a worker and the API export, with every
    sluice_ metric touched.

    A labelled metric renders no sample until a child exists, so one child is
    created per metric (and removed afterwards, leaving the registry as found);
    the API's database gauges come from a snapshot of one queue.
    """
    touched = []
    for metric in vars(metrics).values():
        labelnames = getattr(metric, "_labelnames", None)
        if labelnames:
            values = ["deploy-test"] * len(labelnames)
            metric.labels(*values)
            touched.append((metric, values))
    try:
        queue = QueueDepth(
            queue="deploy-test", **dict.fromkeys(JOB_STATES, 1),
            oldest_ready_seconds=1.0, paused=False, consumers=1,
        )  # fmt: skip
        snapshot = metrics.DatabaseSnapshot([queue], JOB_STATES, dead_letters=1, workers_alive=1)
        text = (generate_latest(metrics.WORKER_REGISTRY) + snapshot.exposition()).decode()
        samples: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, set()).update(sample.labels)
        yield samples
    finally:
        for metric, values in touched:
            metric.remove(*values)


@pytest.fixture(scope="module")
def dashboard(repo) -> dict:
    return json.loads((repo / DASHBOARD).read_text())


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows nest theirs
    return found


def expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions,
    keywords, label names, label values, durations or grouping labels."""
    expr = re.sub(r"label_values\(\s*(\w+)\s*,\s*\w+\s*\)", r"\1", expr)  # Grafana's
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    expr = re.sub(r"\boffset\s+\w+", "", expr)  # offsets
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


def label_uses(expr: str) -> Iterator[tuple[str | None, str]]:
    """(metric or None, label) for matchers `metric{label="..."}` and `by (label)`."""
    for selector in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector.group(2)):
            yield selector.group(1), label
    for grouping in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        for label in re.findall(r"\w+", grouping.group(1)):
            yield None, label
    for call in re.finditer(r"label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)", expr):
        yield call.group(1), call.group(2)


def test_metric_name_extraction_sees_through_promql():
    expr = (
        "histogram_quantile(0.95, sum by (le, task) "
        '(rate(sluice_job_run_seconds_bucket{queue=~"$queue"}[5m]))) / on (task) other_metric'
    )
    assert metric_names(expr) == {"sluice_job_run_seconds_bucket", "other_metric"}
    assert set(label_uses(expr)) == {
        ("sluice_job_run_seconds_bucket", "queue"),
        (None, "le"),
        (None, "task"),
    }


def test_dashboard_is_valid_json_with_unique_panel_ids(dashboard):
    assert dashboard["uid"] == "sluice"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]


def test_every_queried_metric_is_exposed(dashboard, exposed):
    known = set(exposed) | set(PROMETHEUS_SERIES)
    for expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"{sorted(names - known)} in {expr!r} are not exposed"


def test_every_label_a_query_uses_exists_on_its_metrics(dashboard, exposed):
    labels_of = {**exposed, **PROMETHEUS_SERIES}
    for expr in expressions(dashboard):
        in_expr = set().union(*(labels_of[name] for name in metric_names(expr)))
        for metric, label in label_uses(expr):
            allowed = labels_of[metric] if metric else in_expr
            assert label in allowed | TARGET_LABELS, f"label {label!r} unknown in {expr!r}"


def test_dashboard_covers_what_an_operator_watches(dashboard):
    """Queue depth per state, throughput by outcome, wait and run latency
    percentiles, retries, DLQ size, workers alive."""
    exprs = "\n".join(expressions(dashboard))
    assert re.search(r"by \(state\) \(.*sluice_queue_depth", exprs)
    assert re.search(r"by \(outcome\) \(rate\(sluice_jobs_completed_total", exprs)
    for histogram in ("sluice_job_wait_seconds", "sluice_job_run_seconds"):
        for quantile in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({quantile}, sum by (le) (rate({histogram}_bucket" in exprs
    for metric in ("sluice_job_retries_total", "sluice_dead_letters", "sluice_workers_alive"):
        assert metric in exprs


def test_promtool_parses_every_query(dashboard, promtool, tmp_path):
    """Each query, with Grafana's variables substituted, as a recording rule."""
    rules = []
    for i, expr in enumerate(e for e in expressions(dashboard) if "label_values" not in e):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
        rules.append({"record": f"sluice:dashboard_query_{i}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_panels_use_the_dashboards_datasource_variable(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        for item in [panel, *panel.get("targets", [])]:
            if "datasource" in item:
                assert item["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_provisioned_datasource_is_the_compose_prometheus(repo, compose):
    config = yaml.safe_load(
        (repo / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert source["url"] == f"http://prometheus:{port}"


def test_dashboard_provider_reads_the_mounted_directory(repo, compose):
    config = yaml.safe_load(
        (repo / "deploy/grafana/provisioning/dashboards/sluice.yml").read_text()
    )
    (provider,) = config["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert provider["options"]["path"] == mounts["./deploy/grafana/dashboards"]
