"""The moderator-label join: labels meet the verdicts they judge, by ``video_id``, and are counted.

Moderator labels (``moderator-labels``) and the verdicts (``video-verdicts``,
read back from the topic by a Faust agent of the worker) are joined in three
Faust tables, co-partitioned with those two topics: ``video_id`` -> verdict;
``video_id`` -> label waiting for its verdict; ``video_id`` -> label counted.
Either side may arrive first; a label is counted into the accuracy metrics
once per (video, label), whatever is redelivered or repeated.

The tables keep daily tumbling windows that expire after
``label_join_days``, which keeps memory bounded: a verdict older than that
can no longer be joined with its label.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import faust

from streamer.metrics import WorkerMetrics, label_outcome
from streamer.schemas import EventError, ModeratorLabel
from streamer.settings import WorkerSettings

logger = logging.getLogger(__name__)

#: The label-join tables keep one window per day (Kafka record time of the event that set the value).
JOIN_WINDOW_SECONDS = 86400.0


class LabelJoin:
    """Owns the join tables of a Faust app; fed by the worker's verdicts and labels agents."""

    def __init__(self, app: faust.App, settings: WorkerSettings, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics

        def joined_table(name: str) -> Any:
            table = app.Table(name, default=None, partitions=settings.topic_partitions)
            return table.tumbling(JOIN_WINDOW_SECONDS, expires=settings.label_join_days * JOIN_WINDOW_SECONDS)

        self.predictions = joined_table("predictions")
        self.waiting_labels = joined_table("waiting-labels")
        self.counted_labels = joined_table("counted-labels")

    def handle_verdict(self, key: bytes | None, raw: bytes | None) -> None:
        """Remember a verdict read back from the verdicts topic for the label join."""
        try:
            verdict = json.loads(raw or b"")
            video_id, value = verdict["video_id"], verdict["verdict"]
        except (ValueError, TypeError, KeyError):
            logger.warning("ignoring a record on the verdicts topic that is not a verdict (key %r)", key)
            return
        if isinstance(video_id, str) and isinstance(value, str):
            self._remember_verdict(video_id, value)

    def handle_label(self, key: bytes | None, raw: bytes | None) -> None:
        try:
            label = ModeratorLabel.parse(raw)
        except EventError as e:
            logger.warning("ignoring malformed moderator label: %s", e.message)
            self.metrics.errors.labels(reason="malformed_label").inc()
            return
        if not label.counts_for_accuracy:
            return  # "can't tell" closes a review item; it is no evidence about the verdict
        verdict = self._latest(self.predictions, label.video_id)
        if verdict is None:
            self.waiting_labels[label.video_id] = label.label
            return
        self._count_label(label.video_id, verdict, label.label)

    def _remember_verdict(self, video_id: str, verdict: str) -> None:
        """Record the verdict for the label join; count a label that arrived first."""
        self.predictions[video_id] = verdict
        waiting = self._latest(self.waiting_labels, video_id)
        if waiting is not None:
            self._count_label(video_id, verdict, waiting)

    def _count_label(self, video_id: str, verdict: str, label: str) -> None:
        counted = self._latest(self.counted_labels, video_id)
        if counted == label:
            return  # the same label again (a redelivery, a repeated click, a repeated verdict)
        self.counted_labels[video_id] = label
        self.metrics.record_label_outcome(label_outcome(verdict, label))

    def _latest(self, table: Any, video_id: str) -> Any:
        """The newest value for ``video_id`` in a joined table, looking back label_join_days windows."""
        for age in range(self.settings.label_join_days + 1):
            try:
                value = table[video_id].delta(age * JOIN_WINDOW_SECONDS)
            except KeyError:
                continue
            if value is not None:
                return value
        return None
