"""The streaming worker end to end, against the real Apache Kafka the test session starts.

One worker process serves the tests of this module (its own topics and
consumer groups); the kill, restart and broker-restart tests are in
``test_resilience.py``.  Tests wait on conditions (a topic, a group's commits,
a metric), never for a fixed time.
The model is a tiny random-initialised one: these tests are about the flow,
not about accuracy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.bundle import save_bundle
from detectors.embedding import ClipEmbedder, EmbedderSpec
from detectors.prompts import fit_prompt_classifier
from detectors.voting import Policy
from motionguard_dev.harness import (
    TopicReader,
    WorkerProcess,
    new_topics,
    send_all,
    upload_event,
    wait_caught_up,
    wait_for,
)
from streamer.metrics import metric_names
from streamer.schemas import WORKER_ONLY_FIELDS
from tests.c2pa_signing import AI, flip_inside_mdat, make_chain, sign
from tests.videofactory import make_text_file, make_truncated_copy, make_video

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uploads")
    make_video(root / "a.mp4", codec="h264", seconds=1.0, width=96, height=64, fps=10)
    make_video(root / "b.webm", codec="vp9", seconds=1.0, width=64, height=96, fps=10, source="mandelbrot")
    make_video(root / "c.gif", codec="gif", seconds=1.0, width=64, height=64, fps=8, source="color=red")
    make_text_file(root / "notes.mp4")
    make_truncated_copy(root / "a.mp4", root / "truncated.mp4")
    chain = make_chain(tmp_path_factory.mktemp("chain"), "MotionGuard Test Worker")
    sign(root / "a.mp4", root / "signed-ai.mp4", chain, AI)
    flip_inside_mdat(root / "signed-ai.mp4", root / "signed-ai-altered.mp4")
    return root


@pytest.fixture(scope="module")
def label_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose policies make verdicts known in advance: everything flagged, or nothing."""
    spec = EmbedderSpec.from_names("tiny-test", "none", device="cpu")
    classifier = fit_prompt_classifier(ClipEmbedder(spec))
    return save_bundle(
        tmp_path_factory.mktemp("bundles") / "labels",
        name="label-test",
        embedder=spec,
        classifier=classifier,
        classifier_kind="prompt",
        policies={
            "default": Policy(),
            "flag-all": Policy(name="flag-all", flag_threshold=0.0, review_threshold=0.0),
            "pass-all": Policy(name="pass-all", flag_threshold=1.0, review_threshold=1.0, frame_threshold=1.0),
        },
        frames=4,
    )


@pytest.fixture(scope="module")
def worker(
    kafka_broker: Any, video_root: Path, label_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    topics = new_topics("worker")  # not created here: the worker must create them itself
    process = WorkerProcess(
        bootstrap=kafka_broker.bootstrap_servers,
        topics=topics,
        allowed_root=video_root,
        data_dir=tmp_path_factory.mktemp("worker"),
        args=("--bundle", str(label_bundle)),
        extra_env={
            "MOTIONGUARD_ALLOWED_PRIVATE_ADDRESSES": "127.0.0.1/32",
            "MOTIONGUARD_FETCH_RETRIES": "1",
            "MOTIONGUARD_LABEL_JOIN_DAYS": "3",
        },
    ).start()
    yield process
    process.terminate()


@pytest.fixture(scope="module")
def verdicts(worker: WorkerProcess) -> Iterator[TopicReader]:
    reader = TopicReader(worker.bootstrap, worker.topics.verdicts)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def dead_letters(worker: WorkerProcess) -> Iterator[TopicReader]:
    reader = TopicReader(worker.bootstrap, worker.topics.dead_letters)
    yield reader
    reader.close()


def by_id(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        grouped.setdefault(record["video_id"], []).append(record)
    return grouped


def test_ready_and_alive(worker: WorkerProcess) -> None:
    status, body = worker.get("/ready")
    assert status == 200 and json.loads(body)["ready"] is True
    assert worker.get("/healthz")[0] == 200


def test_worker_creates_its_topics(worker: WorkerProcess) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=worker.bootstrap)
    try:
        names = [
            worker.topics.uploads,
            worker.topics.verdicts,
            worker.topics.dead_letters,
            worker.topics.labels,
        ]
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()
    assert described == dict.fromkeys(names, 4)


def test_fifty_uploads_get_fifty_verdicts(worker: WorkerProcess, video_root: Path, verdicts: TopicReader) -> None:
    files = ["a.mp4", "b.webm", "c.gif"]
    events = {
        f"fifty-{i:02d}": upload_event(
            f"fifty-{i:02d}", (video_root / files[i % 3]).as_uri(), uploaded_at="2026-01-01T00:00:00Z"
        )
        for i in range(50)
    }
    started = time.monotonic()
    send_all(worker.bootstrap, worker.topics.uploads, ((k, v) for k, v in events.items()))
    records = by_id(verdicts.wait_for(set(events), timeout_seconds=180))
    elapsed = time.monotonic() - started
    ours = {k: v for k, v in records.items() if k in events}
    assert len(ours) == 50
    for video_id, got in ours.items():
        verdict = got[-1]
        assert verdict["verdict"] in ("ai_generated", "needs_review", "real"), verdict
        assert verdict["error"] is None
        assert verdict["frames_scored"] >= 1
        assert 0.0 <= verdict["score"] <= 1.0
        assert verdict["model_version"].startswith("label-test@")
        assert verdict["uploaded_at"] == "2026-01-01T00:00:00.000Z"
        assert verdict["upload_to_verdict_seconds"] > 0
        assert verdict["decided_at"].endswith("Z")
        assert video_id.startswith("fifty-")
    print(f"50 events -> {len(ours)} verdicts in {elapsed:.1f} s")


BAD_EVENTS: dict[str, tuple[bytes, str]] = {}


def _bad_events(video_root: Path, secret: Path) -> dict[str, tuple[bytes, str]]:
    """video_id (or key) -> (event value, expected error code)."""
    closed_port = "http://127.0.0.1:9/video.mp4"
    return {
        "bad-json": (b"{this is not json", "malformed_event"),
        "bad-missing-uri": (json.dumps({"video_id": "bad-missing-uri"}).encode(), "malformed_event"),
        "bad-outside-root": (upload_event("bad-outside-root", secret.as_uri()), "forbidden_uri"),
        "bad-traversal": (
            upload_event("bad-traversal", f"file://{video_root}/../secret.mp4"),
            "forbidden_uri",
        ),
        "bad-private": (upload_event("bad-private", "http://10.20.30.40/v.mp4"), "forbidden_uri"),
        "bad-scheme": (upload_event("bad-scheme", "ftp://example.com/v.mp4"), "forbidden_uri"),
        "bad-unreachable": (upload_event("bad-unreachable", closed_port), "source_unavailable"),
        "bad-not-video": (upload_event("bad-not-video", (video_root / "notes.mp4").as_uri()), "not_a_video"),
        "bad-truncated": (
            upload_event("bad-truncated", (video_root / "truncated.mp4").as_uri()),
            "corrupt_video",
        ),
        "bad-missing-file": (
            upload_event("bad-missing-file", (video_root / "gone.mp4").as_uri()),
            "not_found",
        ),
    }


def test_bad_events_become_error_verdicts_and_dead_letters(
    worker: WorkerProcess,
    video_root: Path,
    verdicts: TopicReader,
    dead_letters: TopicReader,
    tmp_path: Path,
) -> None:
    secret = video_root.parent / "secret.mp4"
    secret.write_bytes((video_root / "a.mp4").read_bytes())
    bad = _bad_events(video_root, secret)
    good = {f"good-{i}": upload_event(f"good-{i}", (video_root / "a.mp4").as_uri()) for i in range(3)}
    events = [(k, v) for k, (v, _) in bad.items()] + list(good.items())
    send_all(worker.bootstrap, worker.topics.uploads, events)
    records = by_id(verdicts.wait_for(set(bad) | set(good), timeout_seconds=120))
    for video_id, (_, code) in bad.items():
        verdict = records[video_id][-1]
        assert verdict["verdict"] == "error", (video_id, verdict)
        assert verdict["error"]["code"] == code, (video_id, verdict["error"])
        assert verdict["error"]["message"]
    for video_id in good:
        assert records[video_id][-1]["verdict"] != "error"
    letters = by_id(dead_letters.wait_for(set(bad), timeout_seconds=30))
    for video_id, (value, code) in bad.items():
        record = letters[video_id][-1]
        assert record["reason"] == code
        assert record["original"] == value.decode()
    assert not set(good) & set(letters)
    assert worker.process is not None and worker.process.poll() is None, "the worker must keep running"


def test_moderator_labels_give_the_expected_confusion(
    worker: WorkerProcess, video_root: Path, verdicts: TopicReader
) -> None:
    before = worker.metrics()
    uri = (video_root / "a.mp4").as_uri()
    flagged = [f"lab-flag-{i}" for i in range(4)]
    passed = [f"lab-pass-{i}" for i in range(4)]
    late = "lab-late"
    # A label that arrives before its verdict must wait for it.
    send_all(
        worker.bootstrap,
        worker.topics.labels,
        [(late, json.dumps({"video_id": late, "label": "ai_generated"}).encode())],
    )
    join_has_taken_every_label(worker)  # so the late label is in the join's table before its verdict exists
    uploads = [(v, upload_event(v, uri, policy="flag-all")) for v in [*flagged, late]]
    uploads += [(v, upload_event(v, uri, policy="pass-all")) for v in passed]
    send_all(worker.bootstrap, worker.topics.uploads, uploads)
    records = by_id(verdicts.wait_for({*flagged, *passed, late}, timeout_seconds=120))
    assert {records[v][-1]["verdict"] for v in [*flagged, late]} == {"ai_generated"}
    assert {records[v][-1]["verdict"] for v in passed} == {"real"}

    labels = {
        flagged[0]: "ai_generated",
        flagged[1]: "ai_generated",
        flagged[2]: "ai_generated",  # 3 true positives
        flagged[3]: "real",  # 1 false positive
        passed[0]: "real",
        passed[1]: "real",  # 2 true negatives
        passed[2]: "ai_generated",
        passed[3]: "ai_generated",  # 2 false negatives
    }
    events = [
        (v, json.dumps({"video_id": v, "label": label, "moderator": "t"}).encode()) for v, label in labels.items()
    ]
    events.append((flagged[0], json.dumps({"video_id": flagged[0], "label": "ai_generated"}).encode()))  # repeat
    events.append(("lab-x", b"{not json"))  # malformed label: counted as an error, ignored
    # "can't tell" from the review console: valid, but no evidence either way, so not counted at all
    unsure = {"video_id": passed[1], "label": "cant_tell", "moderator": "t", "answers": "real", "audit": True}
    events.append((passed[1], json.dumps(unsure).encode()))
    send_all(worker.bootstrap, worker.topics.labels, events)

    def delta(name: str) -> float:
        return worker.metrics().get(name, 0.0) - before.get(name, 0.0)

    expected = {"true_positive": 4.0, "false_positive": 1.0, "true_negative": 2.0, "false_negative": 2.0}

    def outcomes() -> dict[str, float]:
        return {o: delta(f'motionguard_label_outcomes_total{{outcome="{o}"}}') for o in expected}

    wait_for(lambda: outcomes() == expected, 30, f"label outcomes {expected}", workers=(worker,))
    join_has_taken_every_label(worker)  # the repeat and the "can't tell" come after them: none counted
    assert outcomes() == expected
    # The rolling accuracy covers every label this worker has counted: 6 right out of 9.
    assert worker.metrics()["motionguard_rolling_accuracy_ratio"] == pytest.approx(6 / 9)
    assert delta('motionguard_errors_total{reason="malformed_label"}') == 1.0


def join_has_taken_every_label(worker: WorkerProcess) -> None:
    """Wait until the label join (the Faust app's group) has committed every label and verdict sent so far.

    Faust commits an offset once the agent has handled the records before it, so from then on
    the metrics show whatever those labels were going to count.
    """
    for topic in (worker.topics.labels, worker.topics.verdicts):
        wait_caught_up(worker.bootstrap, worker.topics.prefix, topic, timeout_seconds=60, workers=(worker,))


def test_labels_join_verdicts_of_earlier_days_until_label_join_days(
    worker: WorkerProcess, video_root: Path, verdicts: TopicReader
) -> None:
    """Labels come days after the verdict; the join looks back MOTIONGUARD_LABEL_JOIN_DAYS (3 here)."""
    before = worker.metrics()
    uri = (video_root / "a.mp4").as_uri()
    ids = ["join-2-days-later", "join-5-days-later"]
    send_all(worker.bootstrap, worker.topics.uploads, [(v, upload_event(v, uri, policy="flag-all")) for v in ids])
    verdicts.wait_for(set(ids), timeout_seconds=120)
    now_ms = int(time.time() * 1000)
    for video_id, days in (("join-2-days-later", 2), ("join-5-days-later", 5)):
        label = json.dumps({"video_id": video_id, "label": "ai_generated"}).encode()
        send_all(worker.bootstrap, worker.topics.labels, [(video_id, label)], timestamp_ms=now_ms + days * 86_400_000)

    def outcomes() -> float:
        after = worker.metrics()
        return sum(
            after.get(name, 0.0) - before.get(name, 0.0)
            for name in after
            if name.startswith("motionguard_label_outcomes_total")
        )

    wait_for(lambda: outcomes() >= 1, 30, "the 2-day-old label's outcome", workers=(worker,))
    join_has_taken_every_label(worker)  # the 5-day-old one too: had it been counted, it would be now
    assert outcomes() == 1, "only the 2-day-old verdict is still joinable"
    tp = 'motionguard_label_outcomes_total{outcome="true_positive"}'
    assert worker.metrics()[tp] - before.get(tp, 0.0) == 1


def assert_same_verdict(verdict: dict[str, Any], scanned: dict[str, Any]) -> None:
    """The topic's verdict is the ``scan --json`` object of the same file plus the worker-only fields.

    ``source`` is the upload's URI rather than the path, ``timings_ms`` also has ``fetch``,
    the timings' values differ, and scores may differ in the last digit (the worker embeds
    several videos in one model call)."""
    assert set(verdict) == set(scanned) | set(WORKER_ONLY_FIELDS), set(verdict) ^ (
        set(scanned) | set(WORKER_ONLY_FIELDS)
    )
    assert verdict["source"] == Path(scanned["source"]).as_uri()
    timings = verdict["timings_ms"]
    assert set(timings) == set(scanned["timings_ms"]) | {"fetch"}
    stages = sum(value for stage, value in timings.items() if stage != "total")
    assert timings["total"] == pytest.approx(stages, abs=0.05)

    def same(ours: Any, theirs: Any, where: str) -> None:
        if isinstance(theirs, dict):
            assert isinstance(ours, dict) and set(ours) == set(theirs), where
            for key in theirs:
                same(ours[key], theirs[key], f"{where}.{key}")
        elif isinstance(theirs, list):
            assert isinstance(ours, list) and len(ours) == len(theirs), where
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
                same(a, b, f"{where}[{i}]")
        elif isinstance(theirs, float):
            assert ours == pytest.approx(theirs, abs=2e-3), (where, ours, theirs)
        else:
            assert ours == theirs, (where, ours, theirs)

    for key in set(scanned) - {"source", "timings_ms"}:
        same(verdict[key], scanned[key], key)


def test_verdicts_on_the_topic_are_what_scan_json_prints_plus_worker_fields(
    worker: WorkerProcess, video_root: Path, label_bundle: Path, verdicts: TopicReader
) -> None:
    files = {"prov-signed": "signed-ai.mp4", "prov-altered": "signed-ai-altered.mp4", "prov-unsigned": "a.mp4"}
    send_all(
        worker.bootstrap,
        worker.topics.uploads,
        ((video_id, upload_event(video_id, (video_root / name).as_uri())) for video_id, name in files.items()),
    )
    records = by_id(verdicts.wait_for(set(files), timeout_seconds=180))
    scan = subprocess.run(
        [sys.executable, "-m", "streamer", "scan", "--bundle", str(label_bundle), "--json"]
        + [str(video_root / name) for name in files.values()],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    scanned = [json.loads(line) for line in scan.stdout.splitlines()]
    for video_id, expected in zip(files, scanned, strict=True):
        verdict = records[video_id][-1]
        assert verdict["schema_version"] == 3
        assert_same_verdict(verdict, expected)
    signed = records["prov-signed"][-1]
    assert signed["provenance"]["ai_declared"] and signed["provenance"]["state"] == "untrusted"
    assert (signed["verdict"], signed["decided_by"]) == ("ai_generated", "provenance")
    assert records["prov-altered"][-1]["provenance"]["state"] == "invalid"
    assert records["prov-altered"][-1]["verdict"] != "real"
    assert records["prov-unsigned"][-1]["provenance"]["present"] is False


def test_metrics_expose_everything_and_match_what_was_processed(worker: WorkerProcess, verdicts: TopicReader) -> None:
    def lag_reported_as_zero() -> dict[str, float]:
        """The metrics, once the consumer-lag timer (every 5 s) has reported every partition caught up."""
        metrics = worker.metrics()
        lag = [v for k, v in metrics.items() if k.startswith("motionguard_consumer_lag_messages")]
        return metrics if len(lag) == worker.topics.partitions and not any(lag) else {}

    wait_caught_up(worker.bootstrap, worker.topics.uploads_group, worker.topics.uploads, 60, workers=(worker,))
    metrics = wait_for(lag_reported_as_zero, 30, "a consumer lag of 0 on every partition", workers=(worker,))
    exported = {name.split("{")[0] for name in metrics}
    assert metric_names() <= exported, sorted(metric_names() - exported)

    seen = {}
    for record in verdicts.poll():
        seen[record["video_id"]] = record  # the worker's last verdict per video
    processed = sum(v for k, v in metrics.items() if k.startswith("motionguard_videos_processed_total"))
    assert processed >= len(seen)
    counts = Counter(record["verdict"] for record in verdicts.records)
    for verdict, count in counts.items():
        assert metrics[f'motionguard_videos_processed_total{{verdict="{verdict}"}}'] == count
    errors = Counter(r["error"]["code"] for r in verdicts.records if r["error"])
    for code, count in errors.items():
        assert metrics[f'motionguard_errors_total{{reason="{code}"}}'] == count
        assert metrics[f'motionguard_dead_letters_total{{reason="{code}"}}'] == count
    frames = sum(r["frames_scored"] for r in verdicts.records)
    assert metrics["motionguard_frames_embedded_total"] == frames
    assert metrics["motionguard_model_batch_frames_sum"] == frames
    scored = sum(1 for r in verdicts.records if r["error"] is None)
    assert metrics["motionguard_model_batch_videos_sum"] == scored
    assert metrics["motionguard_events_in_flight"] == 0
    assert metrics["motionguard_worker_ready"] == 1
    assert metrics['motionguard_stage_duration_seconds_count{stage="decode"}'] == scored
    assert metrics['motionguard_stage_duration_seconds_count{stage="provenance"}'] == scored
    reads = {k: v for k, v in metrics.items() if k.startswith("motionguard_provenance_reads_total")}
    assert sum(reads.values()) == scored
    assert reads['motionguard_provenance_reads_total{ai_declared="true",state="untrusted"}'] >= 1
    assert reads['motionguard_provenance_reads_total{ai_declared="true",state="invalid"}'] >= 1
    decided = Counter((r["decided_by"], r["verdict"]) for r in verdicts.records if r["error"] is None)
    for (decided_by, verdict), count in decided.items():
        key = f'motionguard_verdicts_decided_total{{decided_by="{decided_by}",verdict="{verdict}"}}'
        assert metrics[key] == count
    info = [k for k in metrics if k.startswith("motionguard_model_info")]
    assert len(info) == 1 and 'untrained="true"' in info[0] and 'version="label-test@' in info[0]
    # "bad-unreachable" was retried once (MOTIONGUARD_FETCH_RETRIES=1) before it failed.
    assert metrics['motionguard_retries_total{stage="fetch"}'] == 1
    lag = [v for k, v in metrics.items() if k.startswith("motionguard_consumer_lag_messages")]
    assert lag and all(v == 0 for v in lag)
