"""deploy/: the Prometheus alert rules and the Grafana dashboard are valid and use real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "callwatch-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "callwatch-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "callwatch-dashboard.json"
METRIC = re.compile(r"\b((?:callwatch|process)_[a-z_]+?)(?:_sum|_count|_bucket)?\b")
# Announced for /metrics by work in flight (prometheus_client's process collector, the event
# loop lag, store errors, per-endpoint deliveries, the database size); docs/api.md lists them
# once it lands. Anything else must be in docs/api.md already.
ANNOUNCED = {"callwatch_event_loop_lag_seconds", "callwatch_store_errors_total",
             "callwatch_endpoint_deliveries_total", "callwatch_endpoint_delivery_duration_seconds",
             "callwatch_database_size_bytes", "process_resident_memory_bytes",
             "process_cpu_seconds_total", "process_open_fds", "process_max_fds"}
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian: apt-get install prometheus); rules not checked")


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in data["panels"] for t in p["targets"]]


def test_every_metric_is_documented() -> None:
    """Rules and dashboard use only metric names docs/api.md lists (or that are announced)."""
    documented = set(re.findall(r"`((?:callwatch|process)_[a-z_]+)`",
                                (ROOT / "docs" / "api.md").read_text()))
    used = set(METRIC.findall(RULES.read_text())) | {
        name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    assert used, "no metric found"
    assert used - documented - ANNOUNCED == set()


def test_dashboard_is_well_formed() -> None:
    """The dashboard imports: unique panel ids, a query per panel, no overlapping panels."""
    data = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] for p in data["panels"])
    cells: set[tuple[int, int]] = set()
    for panel in data["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        cells |= area


@needs_promtool
def test_rules_pass_promtool() -> None:
    """`promtool check rules` accepts the rules; `promtool test rules` shows them firing."""
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                          capture_output=True, text=True, check=False)
    assert test.returncode == 0, test.stdout + test.stderr


@needs_promtool
def test_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Every dashboard query parses (checked by promtool as recording rules)."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for index, expr in enumerate(dashboard_exprs()):
        concrete = expr.replace("$__rate_interval", "5m").replace("$instance", ".*")
        rules += [f"      - record: dashboard:query{index}",
                  f"        expr: {json.dumps(concrete)}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(rules) + "\n")
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
