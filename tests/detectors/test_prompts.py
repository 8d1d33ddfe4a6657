"""Frame-to-prompt classification on constructed embeddings with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from detectors.prompts import DEFAULT_PROMPTS, PromptClassifier, fit_prompt_classifier, validate_prompts
from detectors.types import AI_LABEL, REAL_LABEL


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class AxisEmbedder:
    """Embeds texts on two axes: 'real' prompts on e0, everything else on e1."""

    image_size = 8
    untrained = False

    def __init__(self) -> None:
        self.calls = 0

    def describe(self) -> dict[str, object]:
        return {"name": "axis"}

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        raise AssertionError("not used")

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        rows = [
            [1.0, 0.1, 0.0] if ("real" in t or "camera" in t or "authentic" in t) else [0.1, 1.0, 0.0] for t in texts
        ]
        return unit(np.asarray(rows, dtype=np.float32))


def test_frames_near_a_class_prompt_get_that_class() -> None:
    classifier = fit_prompt_classifier(AxisEmbedder(), DEFAULT_PROMPTS)
    assert list(classifier.classes_) == [AI_LABEL, REAL_LABEL]
    frames = unit(np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2], [0.7, 0.72, 0.0]], dtype=np.float32))
    proba = classifier.predict_proba(frames)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba[0, 1] > 0.99  # real
    assert proba[1, 0] > 0.99  # AI
    assert 0.3 < proba[2, 0] < 0.9  # in between: not confident
    assert list(classifier.predict(frames[:2])) == [REAL_LABEL, AI_LABEL]


def test_prompt_embeddings_are_computed_once() -> None:
    embedder = AxisEmbedder()
    classifier = fit_prompt_classifier(embedder)
    for _ in range(3):
        classifier.predict_proba(unit(np.ones((2, 3), dtype=np.float32)))
    assert embedder.calls == 1


def test_several_prompts_per_class_are_averaged() -> None:
    X = unit(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    y = np.array(["a", "a", "real"])
    classifier = PromptClassifier().fit(X, y)
    np.testing.assert_allclose(classifier.centroids_[0], unit(np.array([1.0, 1.0])))


def test_logit_scale_sharpens_probabilities() -> None:
    X = unit(np.array([[1.0, 0.0], [0.0, 1.0]]))
    y = np.array([AI_LABEL, REAL_LABEL])
    frame = unit(np.array([[0.6, 0.4]]))
    soft = PromptClassifier(logit_scale=1.0).fit(X, y).predict_proba(frame)[0, 0]
    sharp = PromptClassifier(logit_scale=100.0).fit(X, y).predict_proba(frame)[0, 0]
    assert 0.5 < soft < sharp


@pytest.mark.parametrize(
    "prompts",
    [{AI_LABEL: ["x"]}, {REAL_LABEL: ["x"]}, {REAL_LABEL: ["x"], AI_LABEL: ["  "]}],
)
def test_bad_prompt_sets_are_refused(prompts: dict[str, list[str]]) -> None:
    with pytest.raises(ValueError):
        validate_prompts(prompts)


@parametrize_with_checks([PromptClassifier()])
def test_sklearn_estimator_contract(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)
