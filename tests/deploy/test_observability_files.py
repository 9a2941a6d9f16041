"""deploy/observability: the dashboard and alert rules use only metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from control_plane.metrics import ControlPlaneMetrics
from ext_proc.metrics import GatewayMetrics

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
OURS = re.compile(r"\b((?:infery|gen_ai)_[a-z_]+)")


class _Spool:
    def pending(self) -> int:
        return 0

    class stats:
        delivered = failed_attempts = 0
        last_delivery_at = pending_since = 0.0


class _Limiter:
    fail_open = 0
    refused: dict[str, int] = {}


def exported() -> set[str]:
    """Sample names both processes export (histogram buckets, counters' _total included)."""
    ext_proc = GatewayMetrics()
    ext_proc.watch_spool(_Spool())
    ext_proc.watch_limiter(_Limiter())
    text = (
        generate_latest(ext_proc.registry).decode() + generate_latest(ControlPlaneMetrics().registry).decode()
    )
    # Labelled families print no sample until first used: take the names from the HELP lines too.
    names = set(re.findall(r"^# HELP (\S+)", text, re.M)) | set(re.findall(r"^([a-z_]+)", text, re.M))
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        names |= {n + suffix for n in names}
    return names


def expressions() -> list[str]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    return exprs + [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_dashboard_and_alerts_use_exported_metrics() -> None:
    names = exported()
    # Metric names only: label names (in by (...)) and label matchers ({...}) set aside.
    bare = [re.sub(r"\{[^}]*\}", "", re.sub(r"by \([^)]*\)", "", expr)) for expr in expressions()]
    used = {m for expr in bare for m in OURS.findall(expr)}
    assert used, "no gateway metric referenced"
    assert used <= names, sorted(used - names)


def test_podmonitor_scrapes_the_ports_the_manifests_name() -> None:
    monitor = yaml.safe_load((OBSERVABILITY / "podmonitor.yaml").read_text())
    endpoints = {(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]}
    assert endpoints == {("metrics", "/metrics"), ("envoy-stats", "/stats/prometheus"), ("admin", "/metrics")}
