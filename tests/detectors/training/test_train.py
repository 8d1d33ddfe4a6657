"""Training heads on a constructed embedding cache, and what the bundle records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from detectors.bundle import load_bundle, save_bundle
from detectors.embedding import EmbedderSpec
from detectors.heads import SvmHead
from detectors.prompts import PromptClassifier
from detectors.training.cache import EmbedCache
from detectors.training.datasets import SplitConfig
from detectors.training.evaluate import leave_one_generator_out, select_records
from detectors.training.metrics import evaluate_predictions, predict
from detectors.training.train import TrainConfig, default_grid, train_head
from detectors.types import AI_LABEL, REAL_LABEL
from tests.detectors.training.conftest import DIM, class_direction, unit_rows

SPLIT = SplitConfig(seed=3, val_fraction=0.2, test_fraction=0.25)


def test_two_class_rbf_head_learns_the_constructed_classes(constructed_cache: EmbedCache) -> None:
    trained = train_head(constructed_cache, TrainConfig(classifier="svm-rbf", split=SPLIT))
    head = trained.classifier
    assert isinstance(head, SvmHead) and head.kernel == "rbf"
    assert list(head.classes_) == [AI_LABEL, REAL_LABEL]
    summary = trained.summary
    # The data summary: counts per class and generator per split, the seed, the groups.
    assert summary["split"] == {"seed": 3, "val_fraction": 0.2, "test_fraction": 0.25}
    data = summary["data"]
    assert sum(data[s]["videos"] for s in ("train", "val", "test")) == 28
    assert set(data["train"]["generators"]) == {"genA", "genB"}
    train_groups, test_groups = set(data["train"]["group_names"]), set(data["test"]["group_names"])
    assert train_groups and test_groups and not train_groups & test_groups
    # The search ran with group folds and its choice is what was fitted.
    search = summary["search"]
    assert search["folds"] == 3
    assert len(search["candidates"]) == 12
    assert {k: head.get_params()[k] for k in search["best_params"]} == search["best_params"]
    # Validation metrics, with a calibration measure.
    validation = summary["validation"]
    assert validation["video"]["accuracy"] == 1.0
    assert validation["calibration"]["ece"] is not None
    assert summary["untrained_embedder"] is False  # FAKE_IDENTITY names a "pretrained" embedder


def test_multiclass_head_attributes_generators(constructed_cache: EmbedCache) -> None:
    trained = train_head(constructed_cache, TrainConfig(classifier="svm-multiclass", split=SPLIT, search=False))
    head = trained.classifier
    assert list(head.classes_) == ["genA", "genB", REAL_LABEL]
    attribution = trained.summary["validation"]["attribution"]
    assert attribution["video_accuracy"] == 1.0
    assert trained.summary["search"] is None


@pytest.mark.parametrize("classifier", ["svm-linear", "svm-poly"])
def test_other_kernels_train(constructed_cache: EmbedCache, classifier: str) -> None:
    config = TrainConfig(classifier=classifier, split=SPLIT, param_grid={"C": [1.0, 10.0]})  # type: ignore[arg-type]
    trained = train_head(constructed_cache, config)
    assert trained.classifier.kernel == classifier.removeprefix("svm-")  # type: ignore[attr-defined]
    assert len(trained.summary["search"]["candidates"]) == 2
    assert trained.summary["validation"]["video"]["accuracy"] >= 0.75


def test_fixed_hyper_parameters_skip_the_search(constructed_cache: EmbedCache) -> None:
    config = TrainConfig(classifier="svm-rbf", split=SPLIT, search=False, head_params={"C": 3.0, "gamma": 0.5})
    head = train_head(constructed_cache, config).classifier
    assert head.C == 3.0 and head.gamma == 0.5  # type: ignore[attr-defined]


class AxisTextEmbedder:
    """Puts 'real' prompts on the real class direction and every other prompt on genA's."""

    image_size = 8
    resize_mode = "shortest"
    untrained = False

    def describe(self) -> dict[str, object]:
        return {"name": "axis-text"}

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        raise AssertionError("not used")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        real = ("a real", "camera", "authentic")
        rows = [class_direction(REAL_LABEL if t.startswith(real) else "genA", DIM) for t in texts]
        return unit_rows(np.array(rows))


def test_prompt_head_needs_no_training(constructed_cache: EmbedCache) -> None:
    specs = []

    def text_embedder(spec: EmbedderSpec) -> AxisTextEmbedder:
        specs.append(spec)
        return AxisTextEmbedder()

    trained = train_head(constructed_cache, TrainConfig(classifier="prompt", split=SPLIT), text_embedder=text_embedder)
    assert isinstance(trained.classifier, PromptClassifier)
    assert specs[0].model == "tiny-test"
    assert trained.prompts is not None and REAL_LABEL in trained.prompts
    per_class = trained.summary["validation"]["per_generator"]
    assert per_class[REAL_LABEL]["video_accuracy"] == 1.0
    assert per_class["genA"]["video_accuracy"] == 1.0


def test_trained_bundle_records_the_summary(constructed_cache: EmbedCache, tmp_path: Path) -> None:
    trained = train_head(constructed_cache, TrainConfig(classifier="svm-rbf", split=SPLIT, search=False))
    path = save_bundle(
        tmp_path / "bundle",
        name="constructed",
        embedder=trained.embedder,
        classifier=trained.classifier,
        classifier_kind=trained.kind,
        frames=trained.frames,
        training=trained.summary,
    )
    bundle = load_bundle(path)
    assert bundle.classifier_kind == "svm-rbf"
    assert bundle.frames == 6
    assert bundle.training is not None
    assert bundle.training["data"]["test"]["group_names"] == trained.summary["data"]["test"]["group_names"]
    assert bundle.training["validation"]["video"]["accuracy"] == 1.0


def test_evaluation_uses_the_held_out_groups_and_leave_one_generator_out(
    constructed_cache: EmbedCache, tmp_path: Path
) -> None:
    trained = train_head(constructed_cache, TrainConfig(classifier="svm-rbf", split=SPLIT, search=False))
    path = save_bundle(
        tmp_path / "bundle", name="c", embedder=trained.embedder, classifier=trained.classifier,
        classifier_kind=trained.kind, training=trained.summary,
    )  # fmt: skip
    bundle = load_bundle(path)
    index = constructed_cache.read_index()
    chosen, description = select_records(index.ok, bundle.training, "test")
    assert description == "test"
    assert {r.item.group for r in chosen} == set(trained.summary["data"]["test"]["group_names"])
    everything = constructed_cache.gather(index.identity, index.ok)
    test = everything.subset([i for i, r in enumerate(everything.videos) if r in chosen])
    metrics = evaluate_predictions(predict(bundle.classifier, test))
    assert metrics["video"]["accuracy"] == 1.0
    logo = leave_one_generator_out(bundle, everything, chosen)
    assert [row["generator"] for row in logo["rows"]] == ["genA", "genB"]
    for row in logo["rows"]:
        assert row["videos"] >= 1
        assert 0.0 <= row["video_detection_rate"] <= 1.0
        assert row["real_video_accuracy"] is not None
    # A dataset none of whose groups were in training is evaluated whole.
    other, description = select_records(index.ok, {"data": {"train": {"group_names": ["elsewhere"]}}}, "test")
    assert len(other) == len(index.ok) and description.startswith("all")


def test_default_grids_cover_each_kernel() -> None:
    assert set(default_grid("linear", 8)) == {"C"}
    assert set(default_grid("rbf", 8)) == {"C", "gamma"}
    assert set(default_grid("poly", 8)) == {"C", "degree", "coef0"}
