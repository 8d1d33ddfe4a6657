"""Frame-to-prompt classification: the paper's training-free method.

Each class is described by several text prompts.  Their text embeddings are
averaged into one unit-length direction per class; a frame's probabilities are
a softmax over its cosine similarities to those directions, scaled by CLIP's
logit scale.  Nothing is learned from videos: "fitting" the classifier means
giving it the prompt embeddings and their labels, which makes it an ordinary
scikit-learn estimator (a cosine nearest-centroid classifier with soft output)
that can be saved in a bundle and swapped for an SVM head.

The paper's exact prompts are not public; :data:`DEFAULT_PROMPTS` is ours.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from detectors.types import AI_LABEL, REAL_LABEL, Embedder

logger = logging.getLogger(__name__)

DEFAULT_PROMPTS: dict[str, tuple[str, ...]] = {
    REAL_LABEL: (
        "a real video of a person",
        "camera footage of a person moving",
        "an authentic video of a person filmed with a camera",
        "a real photo of a person",
    ),
    AI_LABEL: (
        "an AI-generated video of a person",
        "a synthetic video of a person made by a text-to-video model",
        "a computer-generated video of a person moving",
        "an AI-generated image of a person",
    ),
}


class PromptClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Cosine nearest-centroid classifier with softmax probabilities.

    ``fit(X, y)`` takes reference embeddings (prompt embeddings for the
    frame-to-prompt method) and their labels; the class direction is the
    normalised mean of a class's rows.  ``predict_proba`` is
    ``softmax(logit_scale * cos(frame, direction))`` over classes.
    """

    def __init__(self, logit_scale: float = 100.0) -> None:
        self.logit_scale = logit_scale

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> PromptClassifier:
        X_arr, y_arr = validate_data(self, X, y, dtype=np.float64)
        if self.logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")
        self.classes_ = unique_labels(y_arr)
        centroids = np.stack([X_arr[y_arr == label].mean(axis=0) for label in self.classes_])
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        self.centroids_ = centroids / np.where(norms == 0, 1.0, norms)
        return self

    def _logits(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        check_is_fitted(self)
        X_arr = validate_data(self, X, dtype=np.float64, reset=False)
        norms = np.linalg.norm(X_arr, axis=1, keepdims=True)
        similarities = (X_arr / np.where(norms == 0, 1.0, norms)) @ self.centroids_.T
        logits: npt.NDArray[np.float64] = self.logit_scale * similarities
        return logits

    def decision_function(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        logits = self._logits(X)
        if len(self.classes_) == 2:
            margin: npt.NDArray[np.float64] = logits[:, 1] - logits[:, 0]
            return margin
        return logits

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        logits = self._logits(X)
        logits -= logits.max(axis=1, keepdims=True)
        expd = np.exp(logits)
        proba: npt.NDArray[np.float64] = expd / expd.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.str_]:
        proba = self.predict_proba(X)
        labels: npt.NDArray[np.str_] = self.classes_[np.argmax(proba, axis=1)]
        return labels


def validate_prompts(prompts: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Check a ``{label: [prompt, ...]}`` mapping: ``real`` plus at least one other class."""
    cleaned = {label: tuple(p.strip() for p in texts if p.strip()) for label, texts in prompts.items()}
    if REAL_LABEL not in cleaned:
        raise ValueError(f"prompts must include the {REAL_LABEL!r} class")
    if len(cleaned) < 2:
        raise ValueError("prompts need at least one class besides 'real'")
    empty = [label for label, texts in cleaned.items() if not texts]
    if empty:
        raise ValueError(f"prompt classes without any prompt: {', '.join(empty)}")
    return cleaned


def fit_prompt_classifier(
    embedder: Embedder,
    prompts: Mapping[str, Sequence[str]] = DEFAULT_PROMPTS,
    logit_scale: float = 100.0,
) -> PromptClassifier:
    """Embed every prompt once and fit a :class:`PromptClassifier` on them."""
    cleaned = validate_prompts(prompts)
    texts = [text for label in cleaned for text in cleaned[label]]
    labels = np.array([label for label in cleaned for _ in cleaned[label]])
    embeddings = embedder.embed_texts(texts)
    logger.debug("embedded %d prompts for %d classes", len(texts), len(cleaned))
    return PromptClassifier(logit_scale=logit_scale).fit(embeddings, labels)
