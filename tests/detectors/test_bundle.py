"""Model bundles: round trip, and refusal of missing, tampered or unexpected parts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.tree import DecisionTreeClassifier

from detectors.bundle import CLASSIFIER_NAME, MANIFEST_NAME, load_bundle, save_bundle
from detectors.embedding import EmbedderSpec
from detectors.errors import BundleError
from detectors.prompts import PromptClassifier
from detectors.types import AI_LABEL, REAL_LABEL
from detectors.voting import Policy


def fitted_prompt_classifier() -> PromptClassifier:
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    return PromptClassifier().fit(X, np.array([AI_LABEL, REAL_LABEL]))


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return save_bundle(
        tmp_path / "bundle",
        name="test-model",
        embedder=EmbedderSpec.from_names("tiny-test", "none"),
        classifier=fitted_prompt_classifier(),
        classifier_kind="prompt",
        policies={"default": Policy(), "strict": Policy(name="strict", flag_threshold=0.9)},
        frames=8,
        prompts={REAL_LABEL: ["a real video"], AI_LABEL: ["a fake video"]},
        version="2026-01-01",
    )


def test_round_trip_keeps_everything(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.name == "test-model"
    assert bundle.model_version == "test-model@2026-01-01"
    assert bundle.classifier_kind == "prompt"
    assert bundle.frames == 8
    assert bundle.embedder.model == "tiny-test" and bundle.embedder.pretrained is None
    assert bundle.policy("strict").flag_threshold == 0.9
    assert bundle.prompts == {REAL_LABEL: ["a real video"], AI_LABEL: ["a fake video"]}
    frames = np.array([[0.9, 0.1], [0.1, 0.9]])
    np.testing.assert_allclose(
        bundle.classifier.predict_proba(frames), fitted_prompt_classifier().predict_proba(frames)
    )


def test_tampered_classifier_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / CLASSIFIER_NAME
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="modified"):
        load_bundle(bundle_dir)


def test_missing_classifier_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / CLASSIFIER_NAME).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle_dir)


def test_missing_manifest_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(bundle_dir)


def test_unexpected_types_are_refused_even_with_a_matching_hash(bundle_dir: Path) -> None:
    """A classifier swapped for another type (hash updated too) still does not load."""
    other = DecisionTreeClassifier().fit([[0.0], [1.0]], [AI_LABEL, REAL_LABEL])
    sio.dump(other, bundle_dir / CLASSIFIER_NAME)
    manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    from detectors.embedding import sha256_file

    manifest["classifier"]["sha256"] = sha256_file(bundle_dir / CLASSIFIER_NAME)
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    # DecisionTreeClassifier is trusted by skops but its tree state is not on our list.
    with pytest.raises(BundleError, match="does not load"):
        load_bundle(bundle_dir)


def test_file_outside_the_bundle_is_refused(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    manifest["classifier"]["file"] = "../../etc/passwd"
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format="something-else"), "not a MotionGuard"),
        (lambda m: m.update(format_version=99), "not supported"),
        (lambda m: m.pop("policies"), "policies"),
        (lambda m: m["policies"].pop("default"), "default"),
        (lambda m: m["policies"]["default"].update(flag_threshold=7), "invalid"),
        (lambda m: m["classifier"].update(classes=["x", "y"]), "do not match"),
    ],
)
def test_invalid_manifest_is_refused(bundle_dir: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    edit(manifest)
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir)


def test_existing_bundle_is_not_overwritten_by_accident(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="exists"):
        save_bundle(
            bundle_dir,
            name="x",
            embedder=EmbedderSpec.from_names("tiny-test", "none"),
            classifier=fitted_prompt_classifier(),
            classifier_kind="prompt",
        )
