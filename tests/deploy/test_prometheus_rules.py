"""The Prometheus rules, their unit tests, the scrape configs and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from streamer.metrics import END_TO_END_BUCKETS_SECONDS, metric_names
from tests.deploy.conftest import (
    CHART_RULES,
    DASHBOARD,
    DEPLOYMENT_DOC,
    REPO,
    RULES,
    RULES_TEST,
    alert_names,
    dashboard_queries,
    iter_panels,
    load_rules,
    promql_metric_names,
    recording_rule_names,
    rule_exprs,
    run_tool,
    substitute_grafana_variables,
)

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
#: Series that are not the worker's but may be used: Prometheus' own scrape health.
PROMETHEUS_SERIES = {"up"}


def known_series() -> set[str]:
    return set(metric_names()) | PROMETHEUS_SERIES | recording_rule_names()


# --- the tokenizer the name checks rely on ------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (verdict) (rate(motionguard_videos_processed_total{verdict="a b"}[5m]))',
            {"motionguard_videos_processed_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket[$__rate_interval])))",
            {"x_seconds_bucket"},
        ),
        ('sum(up{job="motionguard"}) == 0 or absent(up{job="motionguard"})', {"up"}),
        ("a:b:c > 100 and delta(a:b:c[15m]) > 0", {"a:b:c"}),
        ("x unless x offset 10m", {"x"}),
        ('max(m{untrained="true"}) or on() (max(m) * 0) + 1e3', {"m"}),
        ("sum(rate(x[5m])) by (le, stage) / ignoring(stage) group_left(le) y", {"x", "y"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


# --- rules ------------------------------------------------------------------------------------------


def test_promtool_check_rules(promtool: str) -> None:
    run_tool([promtool, "check", "rules", str(RULES)])


def test_promtool_unit_tests(promtool: str) -> None:
    # promtool resolves rule_files relative to the test file's directory.
    run_tool([promtool, "test", "rules", str(RULES_TEST)])


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(alert_names())
    assert alerts, "rules.yml defines no alerts"
    assert alerts - firing == set(), f"alerts without a case where they fire: {sorted(alerts - firing)}"
    assert alerts - quiet == set(), f"alerts without a case where they stay quiet: {sorted(alerts - quiet)}"
    assert (firing | quiet) - alerts == set(), "rules.test.yml tests alerts that rules.yml does not define"


def test_required_alerts_exist() -> None:
    assert {
        "MotionGuardWorkerDown",
        "MotionGuardConsumerLagGrowing",
        "MotionGuardUploadToVerdictSLOBreached",
        "MotionGuardErrorRatioHigh",
        "MotionGuardAccuracyBelowFloor",
        "MotionGuardDeadLetters",
    } <= set(alert_names())


def test_rule_metric_names_are_exported_by_the_worker() -> None:
    known = known_series()
    for name, expr in rule_exprs():
        unknown = promql_metric_names(expr) - known
        assert not unknown, f"rule {name} uses series no worker exports: {sorted(unknown)}"


def test_recording_rules_follow_the_naming_convention() -> None:
    for name in recording_rule_names():
        assert re.fullmatch(r"motionguard:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_alerts_are_documented_and_labelled() -> None:
    doc = DEPLOYMENT_DOC.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("#")
    }
    for rule in load_rules():
        if "alert" not in rule:
            continue
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert labels.get("severity") in {"warning", "critical"}, rule["alert"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        runbook = annotations.get("runbook_url", "")
        assert runbook == f"docs/deployment.md#{str(rule['alert']).lower()}", rule["alert"]
        assert runbook.split("#")[1] in anchors, f"docs/deployment.md has no section for {rule['alert']}"


def test_slo_threshold_is_a_latency_bucket_boundary() -> None:
    # The p95 estimate is exact only at a bucket boundary of the upload-to-verdict histogram.
    (rule,) = [r for r in load_rules() if r.get("alert") == "MotionGuardUploadToVerdictSLOBreached"]
    threshold = float(re.search(r">\s*([0-9.]+)\s*$", str(rule["expr"]).strip()).group(1))  # type: ignore[union-attr]
    assert threshold in END_TO_END_BUCKETS_SECONDS
    assert f"{threshold:g} s" in str(rule["annotations"]["summary"])  # type: ignore[index]


def test_chart_rules_are_a_copy_of_the_deploy_rules() -> None:
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        "helm/motionguard/files/rules.yml differs from deploy/prometheus/rules.yml (the source): "
        "cp deploy/prometheus/rules.yml helm/motionguard/files/rules.yml"
    )


# --- scrape configurations ----------------------------------------------------------------------------


def test_local_prometheus_config(promtool: str) -> None:
    config_path = PROMETHEUS_DIR / "prometheus.yml"
    run_tool([promtool, "check", "config", str(config_path)])
    config = yaml.safe_load(config_path.read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "motionguard"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:6066"]
    assert config["rule_files"] == ["rules.yml"]


def test_compose_prometheus_config(promtool: str, tmp_path: Path) -> None:
    # The compose file mounts rules.yml at /etc/prometheus/rules.yml; check it with a local path.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.compose.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "motionguard"
    assert job["static_configs"][0]["targets"] == ["worker:6066"]
    config["rule_files"] = [str(RULES)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    run_tool([promtool, "check", "config", str(local)])


# --- Grafana dashboard ----------------------------------------------------------------------------------


def load_dashboard() -> dict[str, object]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_valid_and_every_panel_has_a_query() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "motionguard"
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}  # type: ignore[index]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(iter_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        targets = panel.get("targets", [])
        assert targets and all(str(t.get("expr", "")).strip() for t in targets), (
            f"panel {panel['title']!r} has no query"
        )
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert all(t.get("datasource") == panel["datasource"] for t in targets), panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in iter_panels(load_dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


def test_dashboard_metric_names_are_exported_by_the_worker() -> None:
    known = known_series()
    for query in dashboard_queries():
        unknown = promql_metric_names(query.expr) - known
        assert not unknown, f"panel {query.panel!r} ({query.ref_id}) uses unknown series {sorted(unknown)}"


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    # promtool has no offline query checker, but it parses every rule expression: wrap each query.
    rules = [
        {"record": f"dashboard:query_{index}:check", "expr": substitute_grafana_variables(query.expr)}
        for index, query in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_tool([promtool, "check", "rules", str(path)])


def test_every_worker_metric_is_on_the_dashboard_or_in_a_rule() -> None:
    used: set[str] = set()
    for query in dashboard_queries():
        used |= promql_metric_names(query.expr)
    for _, expr in rule_exprs():
        used |= promql_metric_names(expr)
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in metric_names()}
    used_families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert families - used_families == set(), "metrics neither graphed nor alerted on"


def test_dashboard_has_what_moderators_and_operators_need() -> None:
    dashboard = load_dashboard()
    titles = " | ".join(str(panel["title"]).lower() for panel in iter_panels(dashboard))
    for needed in (
        "flagged videos",
        "verdict mix",
        "needs-review",
        "precision, recall and accuracy",
        "upload-to-verdict latency",
        "per-stage latency",
        "errors by reason",
        "dead letters by reason",
        "consumer lag",
        "model batch sizes",
        "model in use",
        "model training state",
    ):
        assert needed in titles, f"no panel about {needed!r}"
    queries = {q.panel: q.expr for q in dashboard_queries()}
    assert 'untrained="true"' in queries["Model training state"]
    assert "motionguard_model_info" in queries["Model in use"]
    (banner,) = [p for p in iter_panels(dashboard) if p["title"] == "Model training state"]
    assert banner["gridPos"]["y"] == 0 and banner["gridPos"]["w"] >= 12, (
        "the untrained indicator must be big and on top"
    )
    assert banner["options"]["colorMode"] == "background"
    mapped = json.dumps(banner["fieldConfig"]["defaults"]["mappings"])
    assert "UNTRAINED" in mapped
