"""The worker's Prometheus metrics, defined once.

Names follow Prometheus practice: one ``motionguard_`` prefix, base units in
names, ``_total`` on counters, ratios in 0-1, and no per-video labels.  The
Grafana dashboard and the alert rules are tested against :data:`METRIC_NAMES`
and against what a running worker really exports.

Accuracy comes from moderators: each moderator label is joined with the
worker's verdict for the same ``video_id``.  A verdict of ``ai_generated`` is a
positive; ``real`` and ``needs_review`` are negatives (the video was not
flagged automatically).  Error verdicts are counted as ``unscored``.
"""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from detectors.provenance import PROVENANCE_STATES

PREFIX = "motionguard_"

#: Buckets for one video's stages: sampling a few frames takes tens to hundreds
#: of milliseconds; a CPU model call on a batch can take seconds.
STAGE_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Upload-to-verdict spans queueing behind other uploads too: up to minutes.
END_TO_END_BUCKETS_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_FRAME_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
BATCH_VIDEO_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)

STAGES = ("fetch", "provenance", "decode", "embed", "classify")
VERDICTS = ("ai_generated", "real", "needs_review", "error")
DECIDERS = ("content", "provenance")
LABEL_OUTCOMES = ("true_positive", "false_positive", "true_negative", "false_negative", "unscored")


class WorkerMetrics:
    """All metrics of one worker, registered in ``registry`` (a fresh one in tests)."""

    def __init__(self, registry: CollectorRegistry, accuracy_window: int = 500) -> None:
        self.registry = registry
        self.videos_processed = Counter(
            PREFIX + "videos_processed_total",
            "Upload events that reached a verdict, by verdict (error included).",
            ["verdict"],
            registry=registry,
        )
        self.errors = Counter(
            PREFIX + "errors_total",
            "Upload events that could not be scored, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            PREFIX + "dead_letters_total",
            "Records written to the dead-letter topic, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.retries = Counter(
            PREFIX + "retries_total",
            "Retries of transient failures (source downloads, produce), by stage.",
            ["stage"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            PREFIX + "stage_duration_seconds",
            "Time per video in each stage: fetch, decode, embed (its share of the batch), classify.",
            ["stage"],
            buckets=STAGE_BUCKETS_SECONDS,
            registry=registry,
        )
        self.processing_seconds = Histogram(
            PREFIX + "processing_duration_seconds",
            "Time from the worker receiving an upload event to sending its verdict.",
            buckets=END_TO_END_BUCKETS_SECONDS,
            registry=registry,
        )
        self.upload_to_verdict_seconds = Histogram(
            PREFIX + "upload_to_verdict_seconds",
            "Time from the event's uploaded_at to the verdict being sent.",
            buckets=END_TO_END_BUCKETS_SECONDS,
            registry=registry,
        )
        self.provenance_reads = Counter(
            PREFIX + "provenance_reads_total",
            "Content Credentials reads, by state (none, trusted, untrusted, invalid, unreadable) and AI declaration.",
            ["state", "ai_declared"],
            registry=registry,
        )
        self.verdicts_decided = Counter(
            PREFIX + "verdicts_decided_total",
            "Scored verdicts by the evidence that set them (content or provenance) and verdict.",
            ["decided_by", "verdict"],
            registry=registry,
        )
        self.frames_embedded = Counter(
            PREFIX + "frames_embedded_total",
            "Frames passed through the image encoder.",
            registry=registry,
        )
        self.batch_frames = Histogram(
            PREFIX + "model_batch_frames",
            "Frames per model call.",
            buckets=BATCH_FRAME_BUCKETS,
            registry=registry,
        )
        self.batch_videos = Histogram(
            PREFIX + "model_batch_videos",
            "Videos sharing one model call.",
            buckets=BATCH_VIDEO_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            PREFIX + "events_in_flight",
            "Upload events received and not yet answered.",
            registry=registry,
        )
        self.model_info = Gauge(
            PREFIX + "model_info",
            "The model in use (value is 1); untrained=true means random weights.",
            ["name", "version", "classifier", "untrained"],
            registry=registry,
        )
        self.ready = Gauge(
            PREFIX + "worker_ready",
            "1 when the model is loaded and the uploads consumer has its partitions (0 during a rebalance).",
            registry=registry,
        )
        self.label_outcomes = Counter(
            PREFIX + "label_outcomes_total",
            "Moderator labels joined with verdicts: true/false positive/negative, or unscored.",
            ["outcome"],
            registry=registry,
        )
        self.rolling_accuracy = Gauge(
            PREFIX + "rolling_accuracy_ratio",
            "Share of the most recent moderator labels that agreed with the verdict.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            PREFIX + "consumer_lag_messages",
            "Upload events not yet consumed, per assigned partition.",
            ["partition"],
            registry=registry,
        )
        for verdict in VERDICTS:
            self.videos_processed.labels(verdict=verdict)
            if verdict != "error":
                for decided_by in DECIDERS:
                    self.verdicts_decided.labels(decided_by=decided_by, verdict=verdict)
        for state in PROVENANCE_STATES:
            for declared in ("true", "false"):
                self.provenance_reads.labels(state=state, ai_declared=declared)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for stage in ("fetch", "produce"):
            self.retries.labels(stage=stage)
        for outcome in LABEL_OUTCOMES:
            self.label_outcomes.labels(outcome=outcome)
        self._recent: deque[bool] = deque(maxlen=accuracy_window)

    def record_label_outcome(self, outcome: str) -> None:
        self.label_outcomes.labels(outcome=outcome).inc()
        if outcome == "unscored":
            return
        self._recent.append(outcome in ("true_positive", "true_negative"))
        self.rolling_accuracy.set(sum(self._recent) / len(self._recent))


def label_outcome(verdict: str, label: str) -> str:
    """Confusion-matrix cell for a verdict confirmed or overturned by a moderator."""
    if verdict == "error":
        return "unscored"
    flagged = verdict == "ai_generated"
    actually_ai = label == "ai_generated"
    if flagged:
        return "true_positive" if actually_ai else "false_positive"
    return "false_negative" if actually_ai else "true_negative"


def metric_names() -> frozenset[str]:
    """Every series name a worker exports (``_total``; ``_bucket``/``_sum``/``_count``)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: set[str] = set()
    for family in WorkerMetrics(CollectorRegistry()).registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return frozenset(names)
