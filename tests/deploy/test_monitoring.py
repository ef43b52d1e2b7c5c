"""The chart's Grafana dashboard and Prometheus alerts: each alert proven by
``promtool test rules``, every query parsed by promtool, and every metric they
read exported by a real quietwire platform (``quietwire up``, scraped)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_platform
from tests.deploy.conftest import CHART, ROOT, find, render, run
from tests.deploy.crds import custom_errors

ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
ALERT_TESTS = Path(__file__).parent / "alerts-test.yaml"
MONITORING = CHART / "ci" / "monitoring-values.yaml"
MINIMAL_VALUES = CHART / "ci" / "minimal-values.yaml"
#: Series the queries read that quietwire does not export, and who does.
FOREIGN = {
    "up": "Prometheus, for every target it scrapes",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
}
#: Series names each exposition type gives a metric family (OpenMetrics/Prometheus text).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w(])(?!\s*\()")
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*=\s*"([^"]*)"')


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install the Debian package prometheus (make test does)")
    return path


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard, Grafana's variables given values."""
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            label_values = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert label_values, variable["definition"]
            exprs.append(label_values[1])
    return [expr.replace("$__rate_interval", "5m").replace("$namespace", ".*") for expr in exprs]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (label lists, ranges and calls left out)."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = LABEL_LISTS.sub("", bare)
    return {name for name in IDENTIFIER.findall(bare) if name not in PROMQL_WORDS}


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'sum by (job, method) (rate(quietwire_x_total{job=~"a|b"}[5m])) / on (job) '
        "quietwire_y offset 10m unless count(up) > 14 * 86400 and bool time()"
    )
    assert metric_names(expr) == {"quietwire_x_total", "quietwire_y", "up"}


def test_alerts_pass_their_promtool_unit_tests() -> None:
    checked = run(promtool(), "check", "rules", ALERTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(promtool(), "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for name in {rule["alert"] for rule in alert_rules()}:
        results = [case["exp_alerts"] for case in cases if case["alertname"] == name]
        assert any(results), f"{name}: no test where it fires"
        assert [] in results, f"{name}: no test where it stays quiet"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule) the way Prometheus will."""
    queries = dashboard_queries()
    rules = [{"record": f"dashboard:query{i}", "expr": expr} for i, expr in enumerate(queries)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run(promtool(), "check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_shows_what_operators_need() -> None:
    titles = {p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]}
    for wanted in (
        "Connected phones",
        "REGISTER by outcome",
        "Calls by security outcome",
        "Relay load",
        "Free port pairs",
        "Refusals by status",
        "Restarts",
        "Failing dependency checks",
        "Certificate expiry",
    ):
        assert wanted in titles


def test_chart_ships_them_off_by_default_and_as_they_are() -> None:
    kinds = {d["kind"] for d in render("-f", MINIMAL_VALUES)}
    assert "PrometheusRule" not in kinds
    assert not [
        d for d in render("-f", MINIMAL_VALUES) if d["metadata"]["name"].endswith("-dashboard")
    ]

    docs = render("-f", MONITORING)
    rule = find(docs, "PrometheusRule", "-quietwire")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    board = find(docs, "ConfigMap", "-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["namespace"] == "monitoring"
    assert board["metadata"]["annotations"] == {"grafana_folder": "VoIP"}
    assert json.loads(board["data"]["quietwire.json"]) == json.loads(DASHBOARD.read_text())


def test_custom_resource_schema_refuses_mistakes() -> None:
    """The schemas in schemas/ catch what a CRD would refuse (they are not decoration)."""
    rule = find(render("-f", MONITORING), "PrometheusRule", "-quietwire")
    assert custom_errors(rule) == []
    misspelt = copy.deepcopy(rule)
    misspelt["spec"]["groups"][0]["rules"][0]["expresion"] = "up"
    assert custom_errors(misspelt)
    bad_for = copy.deepcopy(rule)
    bad_for["spec"]["groups"][0]["rules"][0]["for"] = "1 minute"
    assert custom_errors(bad_for)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The series names a real platform's three services export, from their /metrics."""
    names: set[str] = set()
    with running_platform(tmp_path_factory.mktemp("up")) as platform:
        status = json.loads((platform.state / "up.json").read_text())
        for service in status["services"].values():
            url = f"http://{service['metrics']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = reply.read().decode()
            for family in text_string_to_metric_families(text):
                names |= {family.name + s for s in SUFFIXES.get(family.type, ("",))}
                names |= {sample.name for sample in family.samples}
    return names


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_queried_is_exported(source: str, exported: set[str]) -> None:
    exprs = [r["expr"] for r in alert_rules()] if source == "alerts" else dashboard_queries()
    used = set().union(*map(metric_names, exprs))
    assert used, "no metric found in the queries"
    missing = sorted(used - exported - set(FOREIGN))
    assert not missing, f"{source} read series no quietwire service exports: {missing}"


def test_label_values_matched_are_ones_the_code_emits() -> None:
    """A matcher like outcome="zrtp-mismatch" finds nothing if the code says it differently."""
    source = "\n".join(p.read_text() for p in (ROOT / "services" / "quietwire").rglob("*.py"))
    exprs = [r["expr"] for r in alert_rules()] + dashboard_queries()
    generic = {"namespace", "job", "pod", "container", "status"}
    for expr in exprs:
        for label, value in MATCHER.findall(expr):
            if label not in generic:
                assert f'"{value}"' in source, f'{label}="{value}" never emitted: {expr}'
