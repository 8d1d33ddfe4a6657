"""From per-frame probabilities to one verdict per video.

The paper decides a video by majority vote over its frames.  A moderation
system also wants a graded score, a band of "needs review" between clear
answers, and to see *where* in a video the suspect frames are.  A
:class:`Policy` sets those choices; :func:`vote` applies one, and
:func:`conclude` weighs the content verdict against the file's Content
Credentials (:mod:`detectors.provenance`).

Provenance policy (the content score is always computed and reported):

* An intact AI declaration (state ``trusted`` or ``untrusted``) gives
  ``ai_generated``, decided by provenance, even from an untrusted signer: a
  forged AI declaration only gets the forger's own upload flagged, so nobody
  gains from forging one.
* A camera-capture claim (``digitalCapture``/``computationalCapture``) lowers a
  content flag (``ai_generated`` or ``needs_review``) to ``real`` only when the
  signer chains to a configured trust anchor, the binding is intact, and the
  policy's ``capture_claim_clears`` is on (off by default).  An untrusted or
  broken capture claim never clears anything: anyone can sign a claim.
* A manifest whose binding or signature fails (``invalid``) never lets a video
  pass as ``real``: a content ``real`` becomes ``needs_review``, decided by
  provenance, and the problem codes are in the verdict.
* An ``unreadable`` manifest, or none, leaves the decision to the content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from detectors.provenance import Provenance
from detectors.types import AI_LABEL, REAL_LABEL, GeneratorGuess, Segment, VerdictLabel, VideoScore

Aggregation = Literal["vote", "mean"]
DecidedBy = Literal["content", "provenance"]


@dataclass(frozen=True)
class Policy:
    """How per-frame probabilities become a verdict.

    ``score`` is the fraction of frames whose AI probability exceeds
    ``frame_threshold`` (``aggregation="vote"``, the paper's majority vote) or
    the mean AI probability (``"mean"``).  ``score >= flag_threshold`` gives
    ``ai_generated``; ``review_threshold <= score < flag_threshold`` gives
    ``needs_review``; anything lower gives ``real``.  ``capture_claim_clears``
    lets a trusted, intact camera-capture claim lower a content flag to ``real``
    (see the module docstring; off by default).
    """

    name: str = "default"
    flag_threshold: float = 0.6
    review_threshold: float = 0.4
    aggregation: Aggregation = "vote"
    frame_threshold: float = 0.5
    segment_frames: int = 4
    top_k_generators: int = 3
    capture_claim_clears: bool = False

    def __post_init__(self) -> None:
        for field_name in ("flag_threshold", "review_threshold", "frame_threshold"):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{field_name} must be within [0, 1], got {value}")
        if self.review_threshold > self.flag_threshold:
            raise ValueError(
                f"review_threshold ({self.review_threshold}) must not exceed flag_threshold ({self.flag_threshold})"
            )
        if self.aggregation not in ("vote", "mean"):
            raise ValueError(f"aggregation must be 'vote' or 'mean', got {self.aggregation!r}")
        if self.segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {self.segment_frames}")
        if self.top_k_generators < 1:
            raise ValueError(f"top_k_generators must be >= 1, got {self.top_k_generators}")

    def decide(self, score: float) -> VerdictLabel:
        if score >= self.flag_threshold:
            return "ai_generated"
        if score >= self.review_threshold:
            return "needs_review"
        return "real"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "flag_threshold": self.flag_threshold,
            "review_threshold": self.review_threshold,
            "aggregation": self.aggregation,
            "frame_threshold": self.frame_threshold,
            "segment_frames": self.segment_frames,
            "top_k_generators": self.top_k_generators,
            "capture_claim_clears": self.capture_claim_clears,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown policy fields: {', '.join(sorted(unknown))}")
        return cls(**data)


def ai_probability(proba: npt.NDArray[np.float64], classes: Sequence[str]) -> npt.NDArray[np.float64]:
    """P(frame is AI-generated) = 1 - P(real), for two-class and multi-class heads."""
    labels = list(classes)
    if REAL_LABEL not in labels:
        raise ValueError(f"classifier classes {labels} do not include {REAL_LABEL!r}")
    result: npt.NDArray[np.float64] = 1.0 - proba[:, labels.index(REAL_LABEL)]
    return np.clip(result, 0.0, 1.0)


def _aggregate(p_ai: npt.NDArray[np.float64], policy: Policy) -> float:
    if policy.aggregation == "vote":
        return float(np.mean(p_ai > policy.frame_threshold))
    return float(np.mean(p_ai))


def _segments(
    p_ai: npt.NDArray[np.float64], timestamps: npt.NDArray[np.float64], policy: Policy
) -> tuple[Segment, ...]:
    segments = []
    n = len(p_ai)
    for start in range(0, n, policy.segment_frames):
        stop = min(start + policy.segment_frames, n)
        window = p_ai[start:stop]
        segments.append(
            Segment(
                start_seconds=float(timestamps[start]),
                end_seconds=float(timestamps[stop - 1]),
                score=_aggregate(window, policy),
                frames=stop - start,
                frame_seconds=tuple(float(t) for t in timestamps[start:stop]),
                frame_probabilities=tuple(float(p) for p in window),
            )
        )
    return tuple(segments)


def _generators(
    proba: npt.NDArray[np.float64], classes: Sequence[str], top_k: int
) -> tuple[GeneratorGuess, ...] | None:
    """Top-k generator classes by mean frame probability (multi-class heads only)."""
    names = [c for c in classes if c not in (REAL_LABEL, AI_LABEL)]
    if not names:
        return None
    labels = list(classes)
    mean = proba.mean(axis=0)
    ranked = sorted(names, key=lambda name: -mean[labels.index(name)])[:top_k]
    return tuple(GeneratorGuess(name=name, probability=float(mean[labels.index(name)])) for name in ranked)


def vote(
    proba: npt.NDArray[np.float64],
    classes: Sequence[str],
    timestamps_seconds: npt.NDArray[np.float64],
    policy: Policy,
) -> VideoScore:
    """Aggregate per-frame class probabilities ``(n_frames, n_classes)`` for one video."""
    if proba.ndim != 2 or proba.shape[0] == 0:
        raise ValueError(f"need at least one frame of probabilities, got shape {proba.shape}")
    if proba.shape[0] != len(timestamps_seconds):
        raise ValueError(f"{proba.shape[0]} frames of probabilities but {len(timestamps_seconds)} timestamps")
    p_ai = ai_probability(proba, classes)
    score = _aggregate(p_ai, policy)
    return VideoScore(
        verdict=policy.decide(score),
        score=score,
        vote_fraction=float(np.mean(p_ai > policy.frame_threshold)),
        mean_probability=float(np.mean(p_ai)),
        frames_scored=len(p_ai),
        segments=_segments(p_ai, timestamps_seconds, policy),
        generator=_generators(proba, classes, policy.top_k_generators),
        frame_probabilities=tuple(float(p) for p in p_ai),
    )


@dataclass(frozen=True)
class Decision:
    """The verdict of one scored video and which evidence set it (the content's own verdict stays in
    its :class:`~detectors.types.VideoScore`)."""

    verdict: VerdictLabel
    decided_by: DecidedBy


def conclude(content_verdict: VerdictLabel, provenance: Provenance, policy: Policy) -> Decision:
    """Weigh the content verdict against the file's provenance (module docstring)."""
    if provenance.intact and provenance.ai_declared:
        return Decision("ai_generated", "provenance")
    if (
        policy.capture_claim_clears
        and provenance.state == "trusted"
        and provenance.capture_declared
        and content_verdict in ("ai_generated", "needs_review")
    ):
        return Decision("real", "provenance")
    if provenance.state == "invalid" and content_verdict == "real":
        return Decision("needs_review", "provenance")
    return Decision(content_verdict, "content")
