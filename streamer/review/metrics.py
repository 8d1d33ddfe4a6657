"""The console's Prometheus metrics, defined once (prefix ``motionguard_review_``).

Precision and recall are reported per *origin*: ``audit`` (the hash-chosen
sample of ai_generated / real verdicts, an unbiased estimate) and ``review``
(the needs_review queue, where the model was unsure by construction).  They
are gauges recomputed from the queue state - rebuilt from the topics at
start - so a restart does not reset them.  A verdict of ``ai_generated`` is a
positive and anything else a negative, as in the worker
(:func:`streamer.metrics.label_outcome`).  Served on the metrics port with
``/healthz`` and ``/ready``; no video ids as labels.
"""

from __future__ import annotations

import math
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from streamer.metrics import LABEL_OUTCOMES, PREFIX
from streamer.review.queue import ORIGINS, ReviewQueue
from streamer.schemas import LABEL_VALUES

REVIEW_PREFIX = PREFIX + "review_"
SIGN_IN_OUTCOMES = ("success", "failure", "rate_limited")
STATES = ("open", "claimed", "decided")


class ReviewMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.items = Gauge(
            REVIEW_PREFIX + "items", "Review items by origin (review, audit) and state.", ["origin", "state"],
            registry=registry,
        )  # fmt: skip
        self.labelled = Gauge(
            REVIEW_PREFIX + "labelled_verdicts",
            "Decided items whose label (ai_generated or real) was joined with the verdict, by origin and outcome.",
            ["origin", "outcome"],
            registry=registry,
        )
        self.precision = Gauge(
            REVIEW_PREFIX + "precision_ratio",
            "Share of ai_generated verdicts moderators confirmed, by origin (audit sample or review queue).",
            ["origin"],
            registry=registry,
        )
        self.recall = Gauge(
            REVIEW_PREFIX + "recall_ratio",
            "Share of videos moderators labelled ai_generated that the verdict flagged, by origin.",
            ["origin"],
            registry=registry,
        )
        self.decisions = Counter(
            REVIEW_PREFIX + "decisions_total", "Decisions published by this console, by label.", ["label"],
            registry=registry,
        )  # fmt: skip
        self.sign_ins = Counter(
            REVIEW_PREFIX + "sign_ins_total", "Password sign-in attempts, by outcome.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        for label in LABEL_VALUES:
            self.decisions.labels(label=label)
        for outcome in SIGN_IN_OUTCOMES:
            self.sign_ins.labels(outcome=outcome)

    def refresh(self, queue: ReviewQueue, now: datetime) -> None:
        """Set the gauges from the queue's current state."""
        for origin, states in queue.counts(now).items():
            for state in STATES:
                self.items.labels(origin=origin, state=state).set(states[state])
        confusion = queue.confusion()
        for origin in ORIGINS:
            matrix = confusion[origin]
            for outcome in LABEL_OUTCOMES:
                self.labelled.labels(origin=origin, outcome=outcome).set(matrix.counts.get(outcome, 0))
            precision, recall = matrix.precision, matrix.recall
            self.precision.labels(origin=origin).set(math.nan if precision is None else precision)
            self.recall.labels(origin=origin).set(math.nan if recall is None else recall)
