"""A real Prometheus scraping a real worker: every dashboard query and rule must work.

The worker processes a few uploads (good and bad) and moderator labels on the
test session's Kafka broker.  Prometheus scrapes it every second and evaluates
``deploy/prometheus/rules.yml``.  Then, through Prometheus' HTTP API:

* every dashboard query and every rule expression parses and evaluates;
* every rule evaluates with health ``ok``;
* every metric a query or rule names is one the worker really exports (or
  ``up``, or a recording rule's name).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from motionguard_dev.harness import (
    TopicReader,
    WorkerProcess,
    free_port,
    new_topics,
    send_all,
    upload_event,
    wait_for,
)
from tests.deploy.conftest import (
    RULES,
    dashboard_queries,
    find_tool,
    promql_metric_names,
    recording_rule_names,
    rule_exprs,
    substitute_grafana_variables,
)
from tests.videofactory import make_text_file, make_video

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SCRAPE_JOB = "motionguard"  # the alerts select up{job="motionguard"}
UPLOADS = 8  # six good, one not a video, one malformed
LABELS = 6  # one per good upload


def _api(port: int, path: str, **params: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as e:
        return dict(json.load(e))


@pytest.fixture(scope="module")
def worker(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("uploads")
    make_video(root / "a.mp4", codec="h264", seconds=1.0, width=96, height=64, fps=10)
    make_text_file(root / "notes.mp4")
    topics = new_topics("prom")
    process = WorkerProcess(
        bootstrap=kafka_broker.bootstrap_servers,
        topics=topics,
        allowed_root=root,
        data_dir=tmp_path_factory.mktemp("prom-worker"),
    ).start()
    uri = (root / "a.mp4").as_uri()
    good = [f"prom-{i}" for i in range(6)]
    events = [(v, upload_event(v, uri, uploaded_at="2026-01-01T00:00:00Z")) for v in good]
    events += [("prom-bad", upload_event("prom-bad", (root / "notes.mp4").as_uri())), ("prom-junk", b"{junk")]
    send_all(kafka_broker.bootstrap_servers, topics.uploads, events)
    reader = TopicReader(kafka_broker.bootstrap_servers, topics.verdicts)
    try:
        reader.wait_for({*good, "prom-bad", "prom-junk"}, timeout_seconds=120)
    finally:
        reader.close()
    labels = [
        (v, json.dumps({"video_id": v, "label": "ai_generated" if i % 2 else "real"}).encode())
        for i, v in enumerate(good)
    ]
    send_all(kafka_broker.bootstrap_servers, topics.labels, labels)
    wait_for(lambda: _label_outcomes(process) == LABELS, 60, f"{LABELS} label outcomes", workers=(process,))
    yield process
    process.terminate()


def _label_outcomes(worker: WorkerProcess) -> float:
    return sum(v for k, v in worker.metrics().items() if k.startswith("motionguard_label_outcomes_total"))


def _value(port: int, query: str) -> float | None:
    """The single value of an instant query, ``None`` while it has none (or Prometheus does not answer)."""
    try:
        samples = _api(port, "/api/v1/query", query=query).get("data", {}).get("result", [])
    except (urllib.error.URLError, ConnectionError):
        return None
    return float(samples[0]["value"][1]) if len(samples) == 1 else None


@pytest.fixture(scope="module")
def prometheus(worker: WorkerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = find_tool("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    rules = workdir / "rules.yml"
    rules.write_text(RULES.read_text())
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": SCRAPE_JOB, "static_configs": [{"targets": [f"127.0.0.1:{worker.web_port}"]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()

    def scraped(query: str) -> float | None:
        assert process.poll() is None, (workdir / "prometheus.log").read_text()[-3000:]
        return _value(port, query)

    try:
        # rate() and histogram_quantile() need two samples in their range: wait for three scrapes
        # of the worker, the last one after it had counted every upload and label.
        scrapes = f'count_over_time(up{{job="{SCRAPE_JOB}"}}[1m]) >= 3 and up{{job="{SCRAPE_JOB}"}} == 1'
        wait_for(lambda: scraped(scrapes), 60, "three scrapes of the worker by Prometheus", interval_seconds=0.5)
        wait_for(
            lambda: (
                scraped("sum(motionguard_videos_processed_total)") == UPLOADS
                and scraped("sum(motionguard_label_outcomes_total)") == LABELS
            ),
            30,
            f"Prometheus to have scraped {UPLOADS} verdicts and {LABELS} label outcomes",
            interval_seconds=0.5,
        )
        yield port
    finally:
        process.terminate()
        process.wait(30)


def _exported_names(worker: WorkerProcess) -> set[str]:
    return {name.split("{")[0] for name in worker.metrics()}


def _all_queries() -> list[tuple[str, str]]:
    queries = [(f"rule {name}", expr) for name, expr in rule_exprs()]
    queries += [(f"panel {q.panel}", substitute_grafana_variables(q.expr)) for q in dashboard_queries()]
    return queries


def test_every_query_parses_and_evaluates(prometheus: int) -> None:
    failures = {}
    for where, expr in _all_queries():
        result = _api(prometheus, "/api/v1/query", query=expr)
        if result.get("status") != "success":
            failures[where] = result.get("error")
    assert failures == {}


def test_every_metric_named_is_exported_by_the_worker(worker: WorkerProcess) -> None:
    exported = _exported_names(worker) | {"up"} | recording_rule_names()
    missing = {}
    for where, expr in _all_queries():
        unknown = promql_metric_names(expr) - exported
        if unknown:
            missing[where] = sorted(unknown)
    assert missing == {}


def test_every_rule_evaluates_healthy(prometheus: int) -> None:
    def evaluated_rules() -> list[dict[str, Any]]:
        """Every rule, once each has been evaluated at least once (health "unknown" until then)."""
        groups = _api(prometheus, "/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(rule.get("health") != "unknown" for rule in rules) else []

    rules = wait_for(evaluated_rules, 20, "Prometheus to evaluate every rule", interval_seconds=1)
    assert len(rules) == len(rule_exprs())
    unhealthy = {rule["name"]: rule.get("lastError") for rule in rules if rule.get("health") != "ok"}
    assert unhealthy == {}


def test_dashboard_panels_show_what_the_worker_did(prometheus: int) -> None:
    """The processed events are visible through Prometheus, not only parseable."""
    assert _value(prometheus, "sum(motionguard_videos_processed_total)") == UPLOADS
    assert _value(prometheus, 'motionguard_errors_total{reason="not_a_video"}') == 1
    assert _value(prometheus, "sum(motionguard_label_outcomes_total)") == LABELS
