"""SVM frame classifiers ("heads") with calibrated probabilities.

The paper classifies each frame embedding with a support vector machine: a
two-class SVM (``real`` vs ``ai_generated``) or a multi-class SVM (``real`` plus
one class per generator, which also attributes a video to its generator), with a
linear, RBF or polynomial kernel.  :class:`SvmHead` is that classifier as a
scikit-learn estimator.  Which of the two it is follows from the labels it is
fitted on.

An SVM gives margins, not probabilities.  ``SvmHead`` turns them into
probabilities with cross-validated calibration (Platt's sigmoid by default,
isotonic regression as an option): the SVM is fitted on all the training data
and the calibration map is learned from out-of-fold margins.  Frames of one
video (or one prompt) are strongly correlated, so ``fit`` accepts ``groups``:
the calibration folds then never split a group, otherwise the out-of-fold
margins would be optimistic and the probabilities over-confident.

This module belongs to the inference side: bundles load it, so it imports
nothing from :mod:`detectors.training`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

logger = logging.getLogger(__name__)

Kernel = Literal["linear", "rbf", "poly"]
Calibration = Literal["sigmoid", "isotonic"]

KERNELS: tuple[str, ...] = ("linear", "rbf", "poly")
CALIBRATIONS: tuple[str, ...] = ("sigmoid", "isotonic")


class SvmHead(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A (optionally standardised) SVC whose probabilities are calibrated by cross-validation.

    Parameters
    ----------
    kernel:
        ``"linear"``, ``"rbf"`` or ``"poly"``.
    C, gamma, degree, coef0:
        As in :class:`sklearn.svm.SVC` (``gamma`` and ``coef0`` are ignored by
        the kernels that do not use them).
    class_weight:
        ``"balanced"`` (default: DeepAction has six AI sources for one real one)
        or ``None``.
    standardize:
        Standardise each embedding dimension before the SVM (fitted inside each
        calibration fold, so no fold sees statistics of its held-out part).
    calibration:
        ``"sigmoid"`` (Platt scaling, robust with few samples) or ``"isotonic"``.
    calibration_folds:
        Number of cross-validation folds for the calibration; fewer when a
        class has fewer samples (or groups) than that, never fewer than 2.
    """

    def __init__(
        self,
        kernel: Kernel = "rbf",
        C: float = 1.0,
        gamma: float | str = "scale",
        degree: int = 3,
        coef0: float = 0.0,
        class_weight: str | None = "balanced",
        standardize: bool = True,
        calibration: Calibration = "sigmoid",
        calibration_folds: int = 3,
    ) -> None:
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.class_weight = class_weight
        self.standardize = standardize
        self.calibration = calibration
        self.calibration_folds = calibration_folds

    # -- fitting ----------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {self.kernel!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}")
        if not self.C > 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        if self.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be >= 2, got {self.calibration_folds}")

    def make_svm(self) -> Pipeline:
        """The uncalibrated ``[scaler ->] SVC`` pipeline with this head's parameters."""
        svc = SVC(
            kernel=self.kernel,
            C=self.C,
            gamma=self.gamma,
            degree=self.degree,
            coef0=self.coef0,
            class_weight=self.class_weight,
            decision_function_shape="ovr",
        )
        steps: list[tuple[str, Any]] = [("svc", svc)]
        if self.standardize:
            steps.insert(0, ("scale", StandardScaler()))
        return Pipeline(steps)

    def _calibration_splits(
        self, y: npt.NDArray[Any], groups: npt.ArrayLike | None
    ) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
        _, y_codes = np.unique(y, return_inverse=True)
        if groups is None:
            smallest = int(np.bincount(y_codes).min())
            folds = min(self.calibration_folds, smallest)
            if folds < 2:
                raise ValueError(
                    "every class needs at least 2 samples to calibrate probabilities, "
                    f"the smallest class has {smallest}"
                )
            splitter: Any = StratifiedKFold(n_splits=folds)
            return list(splitter.split(np.zeros(len(y)), y_codes))
        group_arr = np.asarray(groups)
        if group_arr.shape != (len(y),):
            raise ValueError(f"groups has shape {group_arr.shape}, expected ({len(y)},)")
        groups_per_class = [len(np.unique(group_arr[y_codes == c])) for c in range(y_codes.max() + 1)]
        folds = min(self.calibration_folds, min(groups_per_class))
        if folds < 2:
            raise ValueError(
                "every class needs samples from at least 2 groups to calibrate probabilities "
                f"without leaking a group, the smallest class has {min(groups_per_class)}"
            )
        splitter = StratifiedGroupKFold(n_splits=folds)
        splits = list(splitter.split(np.zeros(len(y)), y_codes, group_arr))
        n_classes = y_codes.max() + 1
        for train, _ in splits:
            if len(np.unique(y_codes[train])) < n_classes:
                raise ValueError(
                    "a calibration fold lacks a class entirely: too few groups per class "
                    f"for {folds}-fold group-aware calibration"
                )
        return splits

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike, groups: npt.ArrayLike | None = None) -> SvmHead:
        """Fit the SVM on all of ``X`` and calibrate it on out-of-fold margins.

        ``groups`` (one id per row, e.g. the video or the action prompt) keeps
        each group inside one calibration fold.
        """
        self._check_params()
        X_arr, y_arr = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y_arr)
        classes = np.unique(y_arr)
        if len(classes) < 2:
            raise ValueError(f"SvmHead needs at least 2 classes to fit, got 1 class: {classes[0]!r}")
        splits = self._calibration_splits(y_arr, groups)
        calibrated = CalibratedClassifierCV(self.make_svm(), method=self.calibration, cv=splits, ensemble=False)
        calibrated.fit(X_arr, y_arr)
        self.calibrated_ = calibrated
        self.classes_ = calibrated.classes_
        self.calibration_folds_ = len(splits)
        logger.debug(
            "fitted %s SVM on %d rows, %d classes, %d calibration folds",
            self.kernel,
            X_arr.shape[0],
            len(self.classes_),
            len(splits),
        )
        return self

    # -- inference --------------------------------------------------------------------

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Calibrated class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self)
        X_arr = validate_data(self, X, dtype=np.float64, reset=False)
        proba: npt.NDArray[np.float64] = np.asarray(self.calibrated_.predict_proba(X_arr), dtype=np.float64)
        return proba

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        """The most probable class (argmax of the calibrated probabilities)."""
        proba = self.predict_proba(X)
        labels: npt.NDArray[Any] = self.classes_[np.argmax(proba, axis=1)]
        return labels
