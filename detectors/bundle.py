"""Model bundles: a directory holding everything needed to reproduce a verdict.

Layout::

    BUNDLE/
      bundle.json          manifest (format, version, embedder spec, files + sha256,
                           labels, prompts, policies, sampling, training summary)
      classifier.skops     the fitted frame classifier (skops, never pickle)
      weights.safetensors  optional fine-tuned (FT-CLIP) image/text tower weights

A model file is untrusted input.  Loading checks the manifest, the sha256 of
every file it lists and the types inside the skops file against an allow-list;
anything missing, changed or unexpected is a :class:`BundleError`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import skops.io as sio

from detectors import __version__
from detectors.embedding import EmbedderSpec, sha256_file
from detectors.errors import BundleError
from detectors.types import REAL_LABEL, FrameClassifier
from detectors.voting import Policy

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "motionguard-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "bundle.json"
CLASSIFIER_NAME = "classifier.skops"
WEIGHTS_NAME = "weights.safetensors"

#: Types a bundle's classifier may contain beyond what skops trusts by default.
#: Anything else in a skops file is refused.
TRUSTED_CLASSIFIER_TYPES: frozenset[str] = frozenset(
    {
        "detectors.prompts.PromptClassifier",
        "detectors.heads.SvmHead",
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.isotonic.IsotonicRegression",
        "sklearn.svm._classes.SVC",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._label.LabelEncoder",
    }
)


@dataclass(frozen=True)
class ModelBundle:
    """A loaded, verified bundle."""

    path: Path
    name: str
    version: str
    embedder: EmbedderSpec
    classifier: FrameClassifier
    classifier_kind: str
    policies: Mapping[str, Policy]
    frames: int
    prompts: Mapping[str, Sequence[str]] | None = None
    training: Mapping[str, Any] | None = None
    manifest: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def model_version(self) -> str:
        return f"{self.name}@{self.version}"

    def policy(self, name: str | None) -> Policy:
        key = name or "default"
        if key not in self.policies:
            raise BundleError(f"unknown policy {key!r}; this bundle defines {', '.join(sorted(self.policies))}")
        return self.policies[key]


def _utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def save_bundle(
    directory: str | os.PathLike[str],
    *,
    name: str,
    embedder: EmbedderSpec,
    classifier: FrameClassifier,
    classifier_kind: str,
    policies: Mapping[str, Policy] | None = None,
    frames: int = 16,
    prompts: Mapping[str, Sequence[str]] | None = None,
    training: Mapping[str, Any] | None = None,
    version: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle directory atomically (a temp dir renamed into place)."""
    target = Path(directory)
    if target.exists() and not overwrite:
        raise BundleError(f"{target} already exists; pass overwrite=True to replace it")
    classes = [str(c) for c in classifier.classes_]
    if REAL_LABEL not in classes:
        raise BundleError(f"classifier classes {classes} must include {REAL_LABEL!r}")
    policies = dict(policies or {"default": Policy()})
    if "default" not in policies:
        raise BundleError("a bundle needs a policy named 'default'")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=target.parent))
    try:
        sio.dump(classifier, staging / CLASSIFIER_NAME)
        embedder_entry: dict[str, Any] = {
            "model": embedder.model,
            "architecture": embedder.architecture,
            "pretrained": embedder.pretrained,
            "weights": None,
            "weights_sha256": None,
        }
        if embedder.weights is not None:
            shutil.copyfile(embedder.weights, staging / WEIGHTS_NAME)
            digest = sha256_file(staging / WEIGHTS_NAME)
            if embedder.weights_sha256 is not None and digest != embedder.weights_sha256:
                raise BundleError(f"weights file {embedder.weights} changed while the bundle was written")
            embedder_entry.update(weights=WEIGHTS_NAME, weights_sha256=digest)
        manifest = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": name,
            "version": version or _utc_now(),
            "created_at": _utc_now(),
            "created_by": f"motionguard {__version__}",
            "embedder": embedder_entry,
            "classifier": {
                "file": CLASSIFIER_NAME,
                "sha256": sha256_file(staging / CLASSIFIER_NAME),
                "kind": classifier_kind,
                "classes": classes,
            },
            "labels": classes,
            "prompts": {k: list(v) for k, v in prompts.items()} if prompts else None,
            "policies": {key: policy.to_dict() for key, policy in policies.items()},
            "sampling": {"frames": frames},
            "training": dict(training) if training else None,
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote bundle %s (%s, classes %s)", target, classifier_kind, classes)
    return target


def _require(manifest: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in manifest:
        raise BundleError(f"bundle manifest is missing {key!r}")
    value = manifest[key]
    if not isinstance(value, kind):
        raise BundleError(f"bundle manifest field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _verified_file(root: Path, relative: str, expected_sha256: str) -> Path:
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise BundleError(f"bundle file {relative!r} points outside the bundle")
    if not path.is_file():
        raise BundleError(f"bundle is missing {relative}")
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise BundleError(
            f"bundle file {relative} has sha256 {digest[:12]}..., the manifest says "
            f"{expected_sha256[:12]}...: the file was modified after the bundle was written"
        )
    return path


def load_bundle(directory: str | os.PathLike[str]) -> ModelBundle:
    """Load and verify a bundle; every problem is a :class:`BundleError`."""
    root = Path(directory)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist")
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a bundle: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} is not a MotionGuard bundle manifest")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"bundle format version {manifest.get('format_version')} is not supported "
            f"(this MotionGuard reads version {BUNDLE_FORMAT_VERSION})"
        )
    classifier_entry = _require(manifest, "classifier", dict)
    embedder_entry = _require(manifest, "embedder", dict)
    policies_entry = _require(manifest, "policies", dict)
    classifier_path = _verified_file(
        root, str(classifier_entry.get("file", "")), str(classifier_entry.get("sha256", ""))
    )
    try:
        untrusted = set(sio.get_untrusted_types(file=classifier_path))
    except Exception as e:  # skops raises assorted errors on a malformed archive
        raise BundleError(f"{classifier_path} is not a readable skops file: {e}") from e
    unexpected = untrusted - TRUSTED_CLASSIFIER_TYPES
    if unexpected:
        raise BundleError(
            f"{classifier_path} contains types that MotionGuard does not load: {', '.join(sorted(unexpected))}"
        )
    try:
        classifier = sio.load(classifier_path, trusted=sorted(untrusted))
    except Exception as e:
        raise BundleError(f"could not load classifier from {classifier_path}: {e}") from e
    classes = [str(c) for c in getattr(classifier, "classes_", [])]
    if classes != list(classifier_entry.get("classes", [])):
        raise BundleError(f"classifier classes {classes} do not match the manifest {classifier_entry.get('classes')}")

    weights: str | None = None
    weights_sha256 = embedder_entry.get("weights_sha256")
    if embedder_entry.get("weights"):
        weights = str(_verified_file(root, str(embedder_entry["weights"]), str(weights_sha256)))
    try:
        embedder = EmbedderSpec(
            model=str(embedder_entry["model"]),
            pretrained=embedder_entry.get("pretrained"),
            weights=weights,
            weights_sha256=weights_sha256 if weights else None,
        )
        policies = {key: Policy.from_dict(value) for key, value in policies_entry.items()}
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"bundle manifest {manifest_path} is invalid: {e}") from e
    if "default" not in policies:
        raise BundleError("bundle manifest defines no 'default' policy")
    sampling = manifest.get("sampling") or {}
    return ModelBundle(
        path=root,
        name=str(_require(manifest, "name", str)),
        version=str(_require(manifest, "version", str)),
        embedder=embedder,
        classifier=classifier,
        classifier_kind=str(classifier_entry.get("kind", "unknown")),
        policies=policies,
        frames=int(sampling.get("frames", 16)),
        prompts=manifest.get("prompts"),
        training=manifest.get("training"),
        manifest=manifest,
    )
