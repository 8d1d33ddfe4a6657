"""Voting and verdict policy on constructed probabilities with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.types import AI_LABEL, REAL_LABEL
from detectors.voting import Policy, ai_probability, vote

BINARY = [AI_LABEL, REAL_LABEL]


def binary_proba(p_ai: list[float]) -> np.ndarray:
    p = np.asarray(p_ai, dtype=np.float64)
    return np.stack([p, 1 - p], axis=1)


def timestamps(n: int, step: float = 0.5) -> np.ndarray:
    return np.arange(n, dtype=np.float64) * step


def test_majority_vote_counts_frames_not_confidence() -> None:
    # 3 of 4 frames lean AI only slightly; one frame is very confidently real.
    proba = binary_proba([0.55, 0.6, 0.58, 0.0])
    result = vote(proba, BINARY, timestamps(4), Policy(aggregation="vote"))
    assert result.vote_fraction == pytest.approx(0.75)
    assert result.score == pytest.approx(0.75)
    assert result.verdict == "ai_generated"
    mean_result = vote(proba, BINARY, timestamps(4), Policy(aggregation="mean"))
    assert mean_result.score == pytest.approx((0.55 + 0.6 + 0.58) / 4)
    assert mean_result.verdict == "needs_review"


@pytest.mark.parametrize(
    ("p_ai", "expected"),
    [
        ([0.9] * 10, "ai_generated"),
        ([0.1] * 10, "real"),
        ([0.9] * 5 + [0.1] * 5, "needs_review"),  # 0.5 sits between review 0.4 and flag 0.6
        ([0.9] * 6 + [0.1] * 4, "ai_generated"),  # exactly the flag threshold flags
        ([0.9] * 3 + [0.1] * 7, "real"),
    ],
)
def test_thresholds_give_three_verdicts(p_ai: list[float], expected: str) -> None:
    assert vote(binary_proba(p_ai), BINARY, timestamps(len(p_ai)), Policy()).verdict == expected


def test_segments_show_where_the_suspect_frames_are() -> None:
    # First half real, second half generated: a partly generated video.
    proba = binary_proba([0.05] * 8 + [0.95] * 8)
    result = vote(proba, BINARY, timestamps(16, 0.25), Policy(segment_frames=4))
    assert [s.frames for s in result.segments] == [4, 4, 4, 4]
    assert [s.score for s in result.segments] == [0.0, 0.0, 1.0, 1.0]
    assert result.segments[0].start_seconds == 0.0
    assert result.segments[0].end_seconds == pytest.approx(0.75)
    assert result.segments[2].start_seconds == pytest.approx(2.0)
    assert result.segments[-1].end_seconds == pytest.approx(3.75)


def test_short_last_segment_keeps_every_frame() -> None:
    result = vote(binary_proba([0.9] * 5), BINARY, timestamps(5), Policy(segment_frames=4))
    assert [s.frames for s in result.segments] == [4, 1]
    assert sum(s.frames for s in result.segments) == result.frames_scored == 5


def test_multiclass_names_the_generator() -> None:
    classes = ["Veo", "real", "RunwayML"]  # any order; real is looked up by name
    proba = np.array([[0.7, 0.1, 0.2], [0.6, 0.2, 0.2], [0.5, 0.1, 0.4]])
    result = vote(proba, classes, timestamps(3), Policy(top_k_generators=2))
    assert result.verdict == "ai_generated"
    assert result.generator is not None
    assert [g.name for g in result.generator] == ["Veo", "RunwayML"]
    assert result.generator[0].probability == pytest.approx(0.6)
    np.testing.assert_allclose(result.frame_probabilities, [0.9, 0.8, 0.9])


def test_binary_head_has_no_generator() -> None:
    assert vote(binary_proba([0.9]), BINARY, timestamps(1), Policy()).generator is None


def test_ai_probability_requires_real_class() -> None:
    with pytest.raises(ValueError, match="real"):
        ai_probability(np.ones((1, 2)), ["a", "b"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flag_threshold": 1.5},
        {"review_threshold": 0.8, "flag_threshold": 0.5},
        {"aggregation": "median"},
        {"segment_frames": 0},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_policy_round_trips_and_rejects_unknown_fields() -> None:
    policy = Policy(name="strict", flag_threshold=0.8, review_threshold=0.3, aggregation="mean")
    assert Policy.from_dict(policy.to_dict()) == policy
    with pytest.raises(ValueError, match="flag_treshold"):
        Policy.from_dict({"flag_treshold": 0.5})


def test_vote_rejects_mismatched_timestamps() -> None:
    with pytest.raises(ValueError, match="timestamps"):
        vote(binary_proba([0.5, 0.5]), BINARY, timestamps(3), Policy())
