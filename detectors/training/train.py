"""Fit a frame classifier on cached embeddings and write a model bundle.

Heads (``--classifier``):

* ``svm-linear``, ``svm-rbf``, ``svm-poly``: two-class SVM, ``real`` vs ``ai_generated``;
* ``svm-multiclass``: ``real`` plus one class per generator (RBF kernel unless
  told otherwise), which attributes a video to a generator;
* ``prompt``: the training-free frame-to-prompt classifier (nothing is fitted on
  videos; the split is still made so that its validation numbers are comparable).

The SVM hyper-parameters are chosen by a grid search with group-aware
cross-validation (``GroupKFold`` over the training split's groups, balanced
accuracy).  The search scores the *uncalibrated* SVM (calibration does not move
the decision boundary much and would multiply the cost), on at most
``search_frames_per_video`` frames per video; the chosen parameters are then
fitted on every training frame with group-aware calibration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import GridSearchCV, GroupKFold

from detectors.embedding import EmbedderSpec
from detectors.errors import ModelUnavailableError
from detectors.heads import Calibration, Kernel, SvmHead
from detectors.prompts import DEFAULT_PROMPTS, fit_prompt_classifier
from detectors.training.cache import CacheIndex, EmbedCache, EmbeddedVideos, VideoRecord
from detectors.training.datasets import SplitConfig, split_groups, split_summary
from detectors.training.metrics import evaluate_predictions, headline, predict
from detectors.types import Embedder, FrameClassifier

logger = logging.getLogger(__name__)

HeadKind = Literal["svm-rbf", "svm-linear", "svm-poly", "svm-multiclass", "prompt"]
HEAD_KINDS: tuple[str, ...] = ("svm-rbf", "svm-linear", "svm-poly", "svm-multiclass", "prompt")


@dataclass(frozen=True)
class TrainConfig:
    """How ``motionguard train`` fits a head.

    ``param_grid`` overrides the default search grid (keys are
    :class:`~detectors.heads.SvmHead` parameters); ``search=False`` fits
    ``head_params`` (or the defaults) directly.
    """

    classifier: HeadKind = "svm-rbf"
    split: SplitConfig = field(default_factory=SplitConfig)
    search: bool = True
    cv_folds: int = 3
    search_frames_per_video: int | None = 4
    param_grid: Mapping[str, Sequence[Any]] | None = None
    head_params: Mapping[str, Any] = field(default_factory=dict)
    calibration: Calibration = "sigmoid"
    multiclass_kernel: Kernel = "rbf"

    def __post_init__(self) -> None:
        if self.classifier not in HEAD_KINDS:
            raise ValueError(f"classifier must be one of {', '.join(HEAD_KINDS)}, got {self.classifier!r}")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds must be >= 2, got {self.cv_folds}")
        if self.search_frames_per_video is not None and self.search_frames_per_video < 1:
            raise ValueError("search_frames_per_video must be >= 1 or None")

    @property
    def multiclass(self) -> bool:
        return self.classifier == "svm-multiclass"

    @property
    def kernel(self) -> Kernel | None:
        if self.classifier == "prompt":
            return None
        if self.multiclass:
            return self.multiclass_kernel
        kernel: Kernel = {"svm-rbf": "rbf", "svm-linear": "linear", "svm-poly": "poly"}[self.classifier]  # type: ignore[assignment]
        return kernel


def default_grid(kernel: Kernel, n_features: int) -> dict[str, list[Any]]:
    """The search grid per kernel (the paper does not publish its hyper-parameters).

    After standardisation ``gamma="scale"`` is about ``1 / n_features``; the grid
    brackets it by a factor of ten each way.
    """
    base = 1.0 / max(n_features, 1)
    if kernel == "linear":
        return {"C": [0.01, 0.1, 1.0, 10.0]}
    if kernel == "rbf":
        return {"C": [0.1, 1.0, 10.0, 100.0], "gamma": [base / 10, "scale", base * 10]}
    return {"C": [0.1, 1.0, 10.0], "degree": [2, 3], "coef0": [0.0, 1.0]}


def video_labels(records: Sequence[VideoRecord], multiclass: bool) -> list[str]:
    return [r.item.class_name if multiclass else r.item.label for r in records]


def frames_per_video(data: EmbeddedVideos, limit: int | None, seed: int) -> npt.NDArray[np.intp]:
    """Row indices keeping at most ``limit`` evenly spread frames of each video."""
    if limit is None:
        return np.arange(len(data.X))
    keep: list[npt.NDArray[np.intp]] = []
    for v in range(len(data.videos)):
        rows = np.flatnonzero(data.video == v)
        if len(rows) > limit:
            rows = rows[np.linspace(0, len(rows) - 1, limit).round().astype(int)]
        keep.append(rows)
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.intp)


def search_svm(
    head: SvmHead,
    X: npt.NDArray[Any],
    y: npt.NDArray[Any],
    groups: npt.NDArray[Any],
    grid: Mapping[str, Sequence[Any]],
    folds: int,
) -> dict[str, Any]:
    """Grid-search ``head``'s SVM parameters with ``GroupKFold``; return the best and all scores."""
    n_groups = len(np.unique(groups))
    folds = min(folds, n_groups)
    if folds < 2:
        raise ValueError(f"the grid search needs at least 2 groups in the training split, got {n_groups}")
    search = GridSearchCV(
        head.make_svm(),
        {f"svc__{name}": list(values) for name, values in grid.items()},
        scoring="balanced_accuracy",
        cv=GroupKFold(n_splits=folds),
        refit=False,
        error_score="raise",
    )
    search.fit(X, y, groups=groups)
    best = {name.removeprefix("svc__"): value for name, value in search.best_params_.items()}
    candidates = [
        {
            "params": {k.removeprefix("svc__"): v for k, v in params.items()},
            "mean_balanced_accuracy": round(float(mean), 4),
            "std": round(float(std), 4),
        }
        for params, mean, std in zip(
            search.cv_results_["params"],
            search.cv_results_["mean_test_score"],
            search.cv_results_["std_test_score"],
            strict=True,
        )
    ]
    return {
        "best_params": best,
        "best_mean_balanced_accuracy": round(float(search.best_score_), 4),
        "folds": folds,
        "scoring": "balanced_accuracy (frame level, uncalibrated SVM)",
        "candidates": candidates,
    }


def fit_svm_head(
    data: EmbeddedVideos,
    labels: Sequence[str],
    config: TrainConfig,
    *,
    params: Mapping[str, Any] | None = None,
) -> tuple[SvmHead, dict[str, Any] | None]:
    """Fit an :class:`SvmHead` on ``data`` (per-video ``labels``), searching first if configured."""
    kernel = config.kernel
    assert kernel is not None
    head = SvmHead(kernel=kernel, calibration=config.calibration, calibration_folds=config.cv_folds)
    head.set_params(**dict(params if params is not None else config.head_params))
    y_video = np.asarray(labels, dtype=object)
    y = y_video[data.video].astype(str)
    groups = data.frame_attr(lambda r: r.item.group).astype(str)
    search_report: dict[str, Any] | None = None
    if config.search and params is None:
        rows = frames_per_video(data, config.search_frames_per_video, config.split.seed)
        grid = config.param_grid or default_grid(kernel, data.X.shape[1])
        search_report = search_svm(head, data.X[rows], y[rows], groups[rows], grid, config.cv_folds)
        head.set_params(**search_report["best_params"])
        logger.info("grid search chose %s", search_report["best_params"])
    head.fit(data.X, y, groups=groups)
    return head, search_report


@dataclass(frozen=True)
class TrainedHead:
    """A fitted head and everything ``train`` records about it."""

    classifier: FrameClassifier
    kind: str
    summary: dict[str, Any]
    embedder: EmbedderSpec
    frames: int
    prompts: Mapping[str, Sequence[str]] | None = None


def embedder_spec_from(index: CacheIndex) -> EmbedderSpec:
    """The embedder a cache was made with (its fine-tuned weights file must still exist)."""
    spec = index.identity.spec
    weights = spec.get("weights")
    if weights and not Path(str(weights)).is_file():
        raise ModelUnavailableError(
            f"the cache was embedded with the weights file {weights}, which no longer exists; "
            "the bundle must carry those weights"
        )
    return EmbedderSpec(
        model=str(spec.get("model") or index.identity.embedder["architecture"]),
        pretrained=spec.get("pretrained"),
        weights=spec.get("weights"),
        weights_sha256=spec.get("weights_sha256"),
    )


def train_head(
    cache: EmbedCache,
    config: TrainConfig,
    *,
    text_embedder: Callable[[EmbedderSpec], Embedder] | None = None,
) -> TrainedHead:
    """Split the cached dataset by group, fit the head on ``train``, measure it on ``val``.

    ``text_embedder`` builds the embedder for the prompt head's text prompts
    (only called for ``classifier="prompt"``).
    """
    index = cache.read_index()
    if not index.complete:
        counts = index.counts()
        logger.warning(
            "the embedding cache is incomplete (%d videos pending): training on what is there; "
            "rerun `embed` to finish it",
            counts["pending"],
        )
    items = [record.item for record in index.records]
    assignment = split_groups(items, config.split)
    ok_records = [r for r in index.ok if assignment.get(r.item.group) is not None]
    data = cache.gather(index.identity, ok_records)
    train_idx = [i for i, r in enumerate(data.videos) if assignment[r.item.group] == "train"]
    val_idx = [i for i, r in enumerate(data.videos) if assignment[r.item.group] == "val"]
    train = data.subset(train_idx)
    val = data.subset(val_idx)
    if not train.videos:
        raise ValueError("the training split holds no embedded video")
    spec = embedder_spec_from(index)
    search_report: dict[str, Any] | None = None
    prompts: dict[str, tuple[str, ...]] | None = None
    classifier: FrameClassifier
    if config.classifier == "prompt":
        if text_embedder is None:
            raise ValueError("the prompt head needs a text embedder")
        prompts = dict(DEFAULT_PROMPTS)
        prompt_head = fit_prompt_classifier(text_embedder(spec), prompts)
        head_params: dict[str, Any] = prompt_head.get_params()
        classifier = prompt_head
    else:
        labels = video_labels(train.videos, config.multiclass)
        if len(set(labels)) < 2:
            raise ValueError(f"the training split holds only the class(es) {sorted(set(labels))}")
        head, search_report = fit_svm_head(train, labels, config)
        classifier = head
        head_params = head.get_params()
    validation = evaluate_predictions(predict(classifier, val)) if val.videos else None
    summary = {
        "classifier": config.classifier,
        "head_params": head_params,
        "search": search_report,
        "split": config.split.to_dict(),
        "data": split_summary(items, assignment),
        "embedded": {
            "train_videos": len(train.videos),
            "train_frames": len(train.X),
            "val_videos": len(val.videos),
            "val_frames": len(val.X),
            "errors": index.counts()["error"],
            "pending": index.counts()["pending"],
        },
        "cache": {
            "identity": index.identity.to_dict(),
            "dataset": dict(index.dataset),
        },
        "validation": validation,
        "validation_headline": headline(validation) if validation else None,
        "untrained_embedder": index.identity.untrained,
    }
    return TrainedHead(
        classifier=classifier,
        kind=config.classifier,
        summary=summary,
        embedder=spec,
        frames=int(index.identity.sampling.get("frames", 16)),
        prompts=prompts,
    )
