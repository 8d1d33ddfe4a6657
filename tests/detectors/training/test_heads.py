"""SVM heads on constructed embeddings with known answers, and the scikit-learn contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from detectors.bundle import load_bundle, save_bundle
from detectors.embedding import EmbedderSpec
from detectors.heads import Kernel, SvmHead
from detectors.training.metrics import calibration_metrics
from detectors.types import AI_LABEL, REAL_LABEL
from detectors.voting import Policy, vote
from tests.detectors.training.conftest import constructed_frames


def constructed_set(
    counts: dict[str, int], seed0: int = 0, frames: int = 6, spread: float = 0.35
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames, per-frame class names and per-frame group (= video) ids."""
    X, names, groups = [], [], []
    seed = seed0
    for name, n in counts.items():
        for _ in range(n):
            X.append(constructed_frames(name, seed, frames=frames, spread=spread))
            names += [name] * frames
            groups += [f"v{seed}"] * frames
            seed += 1
    return np.concatenate(X), np.array(names), np.array(groups)


def two_class(names: np.ndarray) -> np.ndarray:
    return np.where(names == REAL_LABEL, REAL_LABEL, AI_LABEL)


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly"])
def test_two_class_head_separates_constructed_classes(kernel: Kernel) -> None:
    X, names, groups = constructed_set({REAL_LABEL: 20, "genA": 10, "genB": 10}, spread=0.15)
    head = SvmHead(kernel=kernel).fit(X, two_class(names), groups=groups)
    assert list(head.classes_) == [AI_LABEL, REAL_LABEL]
    X_new, names_new, _ = constructed_set({REAL_LABEL: 10, "genA": 5, "genB": 5}, seed0=1000, spread=0.15)
    proba = head.predict_proba(X_new)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.mean(head.predict(X_new) == two_class(names_new)) > 0.95


def test_multiclass_head_names_the_generator() -> None:
    X, names, groups = constructed_set({REAL_LABEL: 8, "genA": 6, "genB": 6, "genC": 6}, spread=0.15)
    head = SvmHead(kernel="rbf").fit(X, names, groups=groups)
    assert list(head.classes_) == ["genA", "genB", "genC", REAL_LABEL]
    for k, generator in enumerate(["genA", "genB", "genC"]):
        frames = constructed_frames(generator, 5000 + k, spread=0.15)
        proba = head.predict_proba(frames)
        score = vote(proba, list(head.classes_), np.arange(len(frames)) * 0.5, Policy(top_k_generators=2))
        assert score.verdict == "ai_generated"
        assert score.generator is not None
        assert score.generator[0].name == generator
        assert score.generator[0].probability > 1.5 * score.generator[1].probability
        assert len(score.generator) == 2
    real = constructed_frames(REAL_LABEL, 6000, spread=0.15)
    real_score = vote(head.predict_proba(real), list(head.classes_), np.arange(len(real)) * 0.5, Policy())
    assert real_score.verdict == "real"


def test_probabilities_are_calibrated_on_held_out_data() -> None:
    """Overlapping classes: calibrated P(AI) should match observed frequencies (small ECE)."""
    X, names, groups = constructed_set({REAL_LABEL: 40, "genA": 40}, spread=0.9, frames=4)
    head = SvmHead(kernel="rbf").fit(X, two_class(names), groups=groups)
    X_new, names_new, _ = constructed_set({REAL_LABEL: 60, "genA": 60}, seed0=10_000, spread=0.9, frames=4)
    p_ai = 1.0 - head.predict_proba(X_new)[:, list(head.classes_).index(REAL_LABEL)]
    is_ai = names_new != REAL_LABEL
    accuracy = np.mean((p_ai > 0.5) == is_ai)
    assert 0.6 < accuracy < 1.0  # the classes overlap: probabilities are not all 0 or 1
    assert calibration_metrics(is_ai, p_ai)["ece"] < 0.1


def test_calibration_folds_never_split_a_group() -> None:
    _, names, groups = constructed_set({REAL_LABEL: 6, "genA": 6})
    head = SvmHead(calibration_folds=3)
    splits = head._calibration_splits(two_class(names), groups)
    assert len(splits) == 3
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])


def test_too_few_groups_for_calibration_is_a_clear_error() -> None:
    X, names, groups = constructed_set({REAL_LABEL: 3, "genA": 1})
    with pytest.raises(ValueError, match="at least 2 groups"):
        SvmHead().fit(X, two_class(names), groups=groups)


def test_head_is_searchable_with_group_aware_cv() -> None:
    X, names, groups = constructed_set({REAL_LABEL: 6, "genA": 6})
    search = GridSearchCV(SvmHead(kernel="rbf"), {"C": [0.1, 10.0]}, cv=GroupKFold(n_splits=3))
    search.fit(X, two_class(names), groups=groups)
    assert search.best_params_["C"] in (0.1, 10.0)
    assert search.best_score_ > 0.9


def test_svm_head_round_trips_through_a_bundle(tmp_path: Path) -> None:
    X, names, groups = constructed_set({REAL_LABEL: 6, "genA": 4, "genB": 4})
    head = SvmHead(kernel="poly", degree=2).fit(X, names, groups=groups)
    path = save_bundle(
        tmp_path / "b",
        name="multi",
        embedder=EmbedderSpec.from_names("tiny-test", "none"),
        classifier=head,
        classifier_kind="svm-multiclass",
    )
    loaded = load_bundle(path)
    assert isinstance(loaded.classifier, SvmHead)
    assert list(loaded.classifier.classes_) == ["genA", "genB", REAL_LABEL]
    np.testing.assert_allclose(loaded.classifier.predict_proba(X), head.predict_proba(X))


def _expected_failures(estimator: SvmHead) -> dict[str, str]:
    return {
        "check_class_weight_classifiers": (
            "by design: probabilities are calibrated on the unweighted training data, which undoes "
            "the shift an extreme class_weight gives the SVM margins, so predictions follow the "
            "observed class frequencies rather than the weights"
        ),
    }


@parametrize_with_checks([SvmHead()], expected_failed_checks=_expected_failures)
def test_sklearn_estimator_contract(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks(
    [SvmHead(kernel="linear", calibration="isotonic", standardize=False), SvmHead(kernel="poly")],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_contract_other_settings(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)
