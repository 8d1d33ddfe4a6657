"""Frame- and video-level metrics, calibration and per-generator numbers.

Conventions (the paper's): the positive class is ``ai_generated``; a frame's
AI probability is ``1 - P(real)``; a video is AI-generated when the majority
of its frames are (more than half of the frames have ``P(AI) > 0.5``; an exact
tie goes to the mean ``P(AI)``).  Video-level ROC curves rank videos by their
mean frame ``P(AI)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from detectors.training.cache import EmbeddedVideos
from detectors.types import AI_LABEL, REAL_LABEL
from detectors.voting import ai_probability

logger = logging.getLogger(__name__)

BINARY_LABELS: tuple[str, str] = (REAL_LABEL, AI_LABEL)


@dataclass(frozen=True)
class Predictions:
    """A classifier's per-frame probabilities on an :class:`EmbeddedVideos` set."""

    data: EmbeddedVideos
    classes: tuple[str, ...]
    proba: npt.NDArray[np.float64]

    @property
    def frame_p_ai(self) -> npt.NDArray[np.float64]:
        return ai_probability(self.proba, self.classes)

    @property
    def frame_is_ai(self) -> npt.NDArray[np.bool_]:
        labels = self.data.frame_attr(lambda r: r.item.label)
        return np.asarray(labels == AI_LABEL, dtype=bool)

    @property
    def video_is_ai(self) -> npt.NDArray[np.bool_]:
        return np.array([r.item.label == AI_LABEL for r in self.data.videos], dtype=bool)

    def video_p_ai(self) -> npt.NDArray[np.float64]:
        """Mean frame P(AI) per video."""
        return _per_video_mean(self.frame_p_ai, self.data.video, len(self.data.videos))

    def video_vote(self) -> npt.NDArray[np.float64]:
        """Fraction of each video's frames with P(AI) > 0.5."""
        return _per_video_mean((self.frame_p_ai > 0.5).astype(np.float64), self.data.video, len(self.data.videos))

    def video_pred_ai(self) -> npt.NDArray[np.bool_]:
        vote = self.video_vote()
        mean = self.video_p_ai()
        return np.asarray((vote > 0.5) | ((vote == 0.5) & (mean > 0.5)), dtype=bool)

    def video_class_proba(self) -> npt.NDArray[np.float64]:
        """Mean class probabilities per video, ``(n_videos, n_classes)``."""
        n = len(self.data.videos)
        sums = np.zeros((n, len(self.classes)))
        np.add.at(sums, self.data.video, self.proba)
        counts = np.bincount(self.data.video, minlength=n).reshape(-1, 1)
        result: npt.NDArray[np.float64] = sums / np.maximum(counts, 1)
        return result


def _per_video_mean(values: npt.NDArray[np.float64], owner: npt.NDArray[np.intp], n: int) -> npt.NDArray[np.float64]:
    sums = np.bincount(owner, weights=values, minlength=n)
    counts = np.bincount(owner, minlength=n)
    result: npt.NDArray[np.float64] = sums / np.maximum(counts, 1)
    return result


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def binary_metrics(
    is_ai: npt.NDArray[np.bool_], pred_ai: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]
) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 (positive = AI), ROC-AUC and the confusion matrix."""
    if len(is_ai) == 0:
        return {"n": 0}
    truth = np.where(is_ai, AI_LABEL, REAL_LABEL)
    pred = np.where(pred_ai, AI_LABEL, REAL_LABEL)
    both = len(np.unique(is_ai)) == 2
    return {
        "n": len(is_ai),
        "accuracy": _round(accuracy_score(truth, pred)),
        "balanced_accuracy": _round(0.5 * float(np.mean(pred_ai[is_ai]) + np.mean(~pred_ai[~is_ai]))) if both else None,
        "precision": _round(precision_score(truth, pred, pos_label=AI_LABEL, zero_division=0)),
        "recall": _round(recall_score(truth, pred, pos_label=AI_LABEL, zero_division=0)),
        "f1": _round(f1_score(truth, pred, pos_label=AI_LABEL, zero_division=0)),
        "roc_auc": _round(roc_auc_score(is_ai, score)) if both else None,
        "confusion": {
            "labels": list(BINARY_LABELS),
            "matrix": confusion_matrix(truth, pred, labels=list(BINARY_LABELS)).tolist(),
        },
    }


def calibration_metrics(is_ai: npt.NDArray[np.bool_], p_ai: npt.NDArray[np.float64], bins: int = 10) -> dict[str, Any]:
    """Expected calibration error (equal-width bins), Brier score and the reliability table.

    A calibrated score of 0.9 is right about 90% of the time: ECE is the
    frame-weighted mean gap ``|mean predicted P(AI) - observed AI fraction|``
    over the bins.
    """
    if len(is_ai) == 0:
        return {"n": 0}
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p_ai, edges[1:-1], right=True), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        if count == 0:
            continue
        mean_pred = float(p_ai[mask].mean())
        observed = float(is_ai[mask].mean())
        ece += count / len(p_ai) * abs(mean_pred - observed)
        table.append(
            {
                "low": round(float(edges[b]), 3),
                "high": round(float(edges[b + 1]), 3),
                "count": count,
                "mean_predicted": round(mean_pred, 4),
                "observed": round(observed, 4),
            }
        )
    return {
        "n": len(is_ai),
        "ece": _round(ece),
        "brier": _round(brier_score_loss(is_ai.astype(int), np.clip(p_ai, 0.0, 1.0))),
        "bins": table,
    }


def roc_points(is_ai: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]) -> dict[str, list[float]] | None:
    if len(np.unique(is_ai)) < 2:
        return None
    fpr, tpr, _ = roc_curve(is_ai, score)
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}


def per_generator(pred: Predictions) -> dict[str, dict[str, Any]]:
    """For each class (real and every generator): frame- and video-level accuracy.

    For a generator this is the detection rate (share called AI); for ``real``
    it is the share called real - the paper's per-model rows.
    """
    frame_pred = pred.frame_p_ai > 0.5
    video_pred = pred.video_pred_ai()
    frame_class = pred.data.frame_attr(lambda r: r.item.class_name)
    video_class = np.array([r.item.class_name for r in pred.data.videos], dtype=object)
    result: dict[str, dict[str, Any]] = {}
    for name in sorted(set(video_class.tolist()), key=lambda n: (n != REAL_LABEL, n)):
        want_ai = name != REAL_LABEL
        fmask = frame_class == name
        vmask = video_class == name
        result[name] = {
            "videos": int(vmask.sum()),
            "frames": int(fmask.sum()),
            "frame_accuracy": _round(float(np.mean(frame_pred[fmask] == want_ai))),
            "video_accuracy": _round(float(np.mean(video_pred[vmask] == want_ai))),
        }
    return result


def attribution(pred: Predictions) -> dict[str, Any] | None:
    """Multi-class heads: which class each video is attributed to (argmax of mean probabilities)."""
    generator_classes = [c for c in pred.classes if c not in (REAL_LABEL, AI_LABEL)]
    if not generator_classes:
        return None
    video_class = [r.item.class_name for r in pred.data.videos]
    guessed = [pred.classes[i] for i in np.argmax(pred.video_class_proba(), axis=1)]
    frame_class = pred.data.frame_attr(lambda r: r.item.class_name)
    frame_guess = np.array(pred.classes, dtype=object)[np.argmax(pred.proba, axis=1)]
    labels = sorted(set(pred.classes) | set(video_class), key=lambda n: (n != REAL_LABEL, n))
    ai_videos = [i for i, name in enumerate(video_class) if name != REAL_LABEL]
    return {
        "labels": labels,
        "video_accuracy": _round(accuracy_score(video_class, guessed)) if video_class else None,
        "frame_accuracy": _round(float(np.mean(frame_guess == frame_class))) if len(frame_class) else None,
        "generator_accuracy_on_ai_videos": _round(float(np.mean([guessed[i] == video_class[i] for i in ai_videos])))
        if ai_videos
        else None,
        "confusion": confusion_matrix(video_class, guessed, labels=labels).tolist() if video_class else [],
    }


def evaluate_predictions(pred: Predictions) -> dict[str, Any]:
    """Everything the report shows for one set of predictions."""
    frame_p_ai = pred.frame_p_ai
    frame_is_ai = pred.frame_is_ai
    video_is_ai = pred.video_is_ai
    video_p_ai = pred.video_p_ai()
    return {
        "frame": binary_metrics(frame_is_ai, frame_p_ai > 0.5, frame_p_ai),
        "video": binary_metrics(video_is_ai, pred.video_pred_ai(), video_p_ai),
        "calibration": calibration_metrics(frame_is_ai, frame_p_ai),
        "video_calibration": calibration_metrics(video_is_ai, video_p_ai),
        "per_generator": per_generator(pred),
        "attribution": attribution(pred),
        "roc": {
            "frame": roc_points(frame_is_ai, frame_p_ai),
            "video": roc_points(video_is_ai, video_p_ai),
        },
    }


def predict(classifier: Any, data: EmbeddedVideos) -> Predictions:
    """Run a fitted frame classifier over every frame of ``data``."""
    classes = tuple(str(c) for c in classifier.classes_)
    if len(data.X) == 0:
        return Predictions(data=data, classes=classes, proba=np.zeros((0, len(classes))))
    proba = np.asarray(classifier.predict_proba(data.X), dtype=np.float64)
    return Predictions(data=data, classes=classes, proba=proba)


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a table row shows."""
    frame, video = metrics.get("frame", {}), metrics.get("video", {})
    return {
        "videos": video.get("n", 0),
        "frame_accuracy": frame.get("accuracy"),
        "video_accuracy": video.get("accuracy"),
        "video_roc_auc": video.get("roc_auc"),
        "video_f1": video.get("f1"),
    }


def class_counts(names: Sequence[str]) -> dict[str, int]:
    values, counts = np.unique(np.asarray(names, dtype=object).astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}
