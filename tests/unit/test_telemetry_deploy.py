"""deploy/observability: the dashboard and alerts query only metrics taskforge exports, and the
manifests are valid Kubernetes objects whose referenced files exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from taskforge import metrics

HERE = Path(__file__).resolve().parents[2] / "deploy" / "observability"
METRIC = re.compile(r"\btaskforge_[a-z_]+\b")


def exported_series() -> set[str]:
    """Every series name taskforge's metrics produce (counters end in _total, ...)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(value._name + "_total")
        elif isinstance(value, Histogram):
            names |= {value._name + suffix for suffix in ("_bucket", "_sum", "_count")}
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((HERE / "grafana-dashboard.json").read_text())
    return loaded


def dashboard_queries() -> list[str]:
    board = dashboard()
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((HERE / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_dashboard_and_alerts_query_only_exported_metrics():
    known = exported_series()
    queries = dashboard_queries() + [rule["expr"] for rule in alert_rules()]
    unknown = {name for query in queries for name in METRIC.findall(query)} - known
    assert not unknown, f"not exported by taskforge.metrics: {sorted(unknown)}"


def test_dashboard_shows_throughput_failures_backlog_and_latency_percentiles():
    queries = " ".join(dashboard_queries())
    for needed in (
        "rate(taskforge_job_success_total",
        "rate(taskforge_job_failure_total",
        "taskforge_queue_depth",
        "taskforge_oldest_job_age_seconds",
        "taskforge_dlq_count",
        "histogram_quantile(0.99, sum by (le) (rate(taskforge_job_runtime_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(taskforge_job_time_in_queue_seconds_bucket",
    ):
        assert needed in queries


def test_dashboard_panels_have_unique_ids_and_a_place():
    panels = dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_alerts_have_a_summary_and_a_severity():
    for rule in alert_rules():
        assert rule["alert"].startswith("Taskforge")
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]


@pytest.mark.parametrize("version", ["1.27.0", kubernetes_validate.latest_version()])
def test_grafana_manifest_is_valid(version):
    for document in yaml.safe_load_all((HERE / "grafana.yaml").read_text()):
        kubernetes_validate.validate(document, version, strict=True)


def test_every_referenced_file_exists():
    kustomization = yaml.safe_load((HERE / "kustomization.yaml").read_text())
    files = [*kustomization["resources"]]
    for generator in kustomization["configMapGenerator"]:
        files += [entry.split("=", 1)[-1] for entry in generator["files"]]
    compose = yaml.safe_load((HERE / "compose.yaml").read_text())
    for service in compose["services"].values():
        files += [volume.split(":", 1)[0] for volume in service.get("volumes", [])]
    for name in files:
        assert (HERE / name).is_file(), name
