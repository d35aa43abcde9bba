"""The alert rules, Prometheus and Alertmanager configs checked by the real tools (Debian's ``prometheus`` and
``prometheus-alertmanager``, installed by ``make test``), and every metric they or the dashboard query exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import services.common.metrics  # noqa: F401  (registers every tradebot_* metric)
from tests.support.processes import REPO_ROOT

MONITORING = REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "tradebot-dashboard.json"
BUILT_IN = {"up"}
# PromQL words that look like metric names but are not.
PROMQL_WORDS = {"sum", "max", "min", "avg", "by", "without", "increase", "rate", "irate", "time", "absent",
                "clamp_min", "clamp_max", "and", "or", "unless", "on", "ignoring", "histogram_quantile", "le",
                "count", "bool", "offset", "topk", "vector", "scalar", "humanize", "label_replace"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs Debian's prometheus and prometheus-alertmanager"
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=MONITORING)


def test_alert_rules_are_valid() -> None:
    result = run(tool("promtool"), "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_on_its_evidence_and_not_without_it() -> None:
    result = run(tool("promtool"), "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts.test.yml").read_text()))
    assert tested == set(alert_names()), "every alert has unit tests"


def test_prometheus_and_alertmanager_configs_are_valid() -> None:
    result = run(tool("promtool"), "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(tool("amtool"), "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_monitoring_manifests_match_the_schema_and_ship_the_tested_files() -> None:
    for document in yaml.safe_load_all((MONITORING / "k8s.yaml").read_text()):
        kubernetes_validate.validate(document, "1.33.0", strict=True)
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    files = [entry.split("=")[-1] for generator in kustomization["configMapGenerator"] for entry in generator["files"]]
    assert sorted(files) == ["alertmanager.yml", "alerts.yml", "prometheus-k8s.yml"]
    # Debian's promtool lacks Kubernetes discovery: check the k8s config's shape instead.
    config = yaml.safe_load((MONITORING / "prometheus-k8s.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert config["scrape_configs"][0]["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["tradebot"]


def alert_names() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


def metric_names(expression: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\b(?:by|without|on|ignoring)\s*\([^)]*\)", "",
                            expression)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels))
    return {name for name in names if name not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhd]?|e\d*", name)}


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    """Every series name the services can export (a labelled metric has no samples until first used)."""
    names = set(BUILT_IN)
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_every_metric_the_alerts_query_exists() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    used = set().union(*(metric_names(rule["expr"]) for group in rules["groups"] for rule in group["rules"]))
    assert used and used - exported() == set()


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(expressions) >= 8
    used = set().union(*(metric_names(expression) for expression in expressions))
    assert used - exported() == set(), "a panel queries a metric no service exports (renamed?)"
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for subject in ("tick duration", "bots by status", "weight", "ai", "orders", "breaker", "halt"):
        assert subject in titles, subject


@pytest.mark.parametrize("expression, names", [
    ('sum(increase(tradebot_bot_results_total{status="failed"}[10m])) / clamp_min(sum(x_total[10m]), 1)',
     {"tradebot_bot_results_total", "x_total"}),
    ("time() - max(tradebot_last_tick_timestamp_seconds > 0) > 600", {"tradebot_last_tick_timestamp_seconds"}),
    ("sum by (code) (increase(tradebot_cron_responses_total[5m]))", {"tradebot_cron_responses_total"}),
])
def test_metric_names_are_read_from_promql(expression: str, names: set[str]) -> None:
    assert metric_names(expression) == names


def test_make_test_installs_the_tools() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "prometheus-alertmanager" in makefile and "command -v promtool" in makefile and "command -v amtool" in makefile
