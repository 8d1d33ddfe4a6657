"""Shared pieces of the deploy tests: where the tools are, and the PromQL in the deploy files.

The tools come from ``scripts/install-deploy-tools.sh`` (``.tools/bin``, ``.tools/schemas`` and
Debian's ``prometheus`` package).  A missing tool FAILS the test that needs it, with a message
saying how to install it: nothing here is skipped.

Helpers for other tests (e.g. one that runs a real Prometheus against a real worker):

* :func:`rule_exprs` / :func:`alert_names` / :func:`recording_rule_names` read
  ``deploy/prometheus/rules.yml``;
* :func:`dashboard_queries` lists every query of the Grafana dashboard, and
  :func:`substitute_grafana_variables` makes one runnable against Prometheus' HTTP API;
* :func:`promql_metric_names` lists the series names a PromQL expression selects.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
SCHEMAS = REPO / ".tools" / "schemas"
CHART = REPO / "helm" / "motionguard"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = REPO / "deploy" / "prometheus" / "rules.test.yml"
CHART_RULES = CHART / "files" / "rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "motionguard-dashboard.json"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"

INSTALL_HINT = "run scripts/install-deploy-tools.sh (or `make deploy-tools`) to install it"
#: Kubernetes versions the chart is validated against (schemas from install-deploy-tools.sh).
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")


def find_tool(name: str) -> str:
    """Path of ``name`` in .tools/bin or on PATH; the calling test fails when it is missing."""
    local = TOOLS_BIN / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} is not installed: {INSTALL_HINT}", pytrace=False)


def run_tool(
    args: list[str], *, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool, failing the test with its output when ``check`` and it exits non-zero."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if check and result.returncode != 0:
        output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        pytest.fail(f"{' '.join(args)} exited {result.returncode}\n{output}", pytrace=False)
    return result


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def kubeconform() -> str:
    return find_tool("kubeconform")


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_tool("promtool")


@pytest.fixture(scope="session")
def deploycheck() -> str:
    return find_tool("deploycheck")


@pytest.fixture(scope="session")
def schemas() -> Path:
    """The offline JSON schemas; fails when install-deploy-tools.sh has not prepared them."""
    needed = [
        SCHEMAS / "kubernetes" / f"v{v}-standalone-strict" / "deployment-apps-v1.json" for v in KUBERNETES_VERSIONS
    ]
    needed += [
        SCHEMAS / "crds" / "monitoring.coreos.com" / "servicemonitor_v1.json",
        SCHEMAS / "crds" / "monitoring.coreos.com" / "prometheusrule_v1.json",
        SCHEMAS / "crds" / "keda.sh" / "scaledobject_v1alpha1.json",
        SCHEMAS / "crds" / "keda.sh" / "triggerauthentication_v1alpha1.json",
        SCHEMAS / "keda" / "kafka-scaler.json",
    ]
    missing = [str(path.relative_to(REPO)) for path in needed if not path.is_file()]
    if missing:
        pytest.fail(f"schemas missing ({', '.join(missing)}): {INSTALL_HINT}", pytrace=False)
    return SCHEMAS


# --- Prometheus rules ---------------------------------------------------------------------------


def load_rules(path: Path = RULES) -> list[dict[str, object]]:
    """Every rule (recording and alerting) of a rules file, in order."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def rule_exprs(path: Path = RULES) -> list[tuple[str, str]]:
    """``(record or alert name, expr)`` for every rule."""
    return [(str(rule.get("record") or rule.get("alert")), str(rule["expr"])) for rule in load_rules(path)]


def alert_names(path: Path = RULES) -> list[str]:
    return [str(rule["alert"]) for rule in load_rules(path) if "alert" in rule]


def recording_rule_names(path: Path = RULES) -> set[str]:
    return {str(rule["record"]) for rule in load_rules(path) if "record" in rule}


# --- Grafana dashboard --------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardQuery:
    panel: str
    ref_id: str
    expr: str


def iter_panels(dashboard: dict[str, object]) -> Iterator[dict[str, object]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):  # type: ignore[union-attr]
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(path: Path = DASHBOARD) -> list[DashboardQuery]:
    """Every Prometheus query of the dashboard (Grafana variables not yet substituted)."""
    dashboard = json.loads(path.read_text())
    return [
        DashboardQuery(str(panel.get("title", "")), str(target.get("refId", "")), str(target["expr"]))
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def substitute_grafana_variables(expr: str, rate_interval: str = "1m", range_: str = "1h") -> str:
    """Replace Grafana's built-in variables so Prometheus (or promtool) can parse the query."""
    replacements = {
        "$__rate_interval": rate_interval,
        "${__rate_interval}": rate_interval,
        "$__interval": rate_interval,
        "${__interval}": rate_interval,
        "$__range": range_,
        "${__range}": range_,
    }
    for variable, value in replacements.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable left in {expr!r}")
    return expr


# --- PromQL -------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
    }
)


def promql_metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (a small tokenizer, not a full parser).

    Removes strings, label matchers, grouping clauses and ranges, then keeps identifiers that
    are neither keywords nor followed by ``(`` (functions and aggregations).
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names
