"""Build a ready :class:`Detector` from a bundle or from model names.

The two ways in:

* ``bundle=DIR``: a verified model bundle (embedder spec, classifier, policies).
* ``model=NAME, pretrained=TAG``: an open_clip model with the training-free
  frame-to-prompt classifier and the default prompts.  ``pretrained="none"``
  gives random weights; the detector then reports ``untrained`` everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from detectors.bundle import load_bundle
from detectors.embedding import ClipEmbedder, Device, EmbedderSpec
from detectors.pipeline import Detector, ModelInfo
from detectors.prompts import DEFAULT_PROMPTS, fit_prompt_classifier
from detectors.provenance import ProvenanceConfig, ProvenanceReader
from detectors.sampling import FfmpegSampler, SamplingConfig
from detectors.voting import Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorOptions:
    """What a caller may choose; ``None`` means "the bundle's or the default value"."""

    bundle: str | None = None
    model: str = "clip-vit-b-32"
    pretrained: str | None = None
    weights: str | None = None
    device: Device = "auto"
    batch_size: int = 64
    frames: int | None = None
    flag_threshold: float | None = None
    review_threshold: float | None = None
    aggregation: str | None = None
    sampling: SamplingConfig | None = None
    prompts: Mapping[str, Sequence[str]] | None = None
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)
    capture_claim_clears: bool | None = None


def _override_default_policy(policies: dict[str, Policy], options: DetectorOptions) -> dict[str, Policy]:
    changes: dict[str, object] = {}
    if options.flag_threshold is not None:
        changes["flag_threshold"] = options.flag_threshold
    if options.review_threshold is not None:
        changes["review_threshold"] = options.review_threshold
    if options.aggregation is not None:
        changes["aggregation"] = options.aggregation
    if options.capture_claim_clears is not None:
        changes["capture_claim_clears"] = options.capture_claim_clears
    if changes:
        policies["default"] = dataclasses.replace(policies["default"], **changes)  # type: ignore[arg-type]
    return policies


def build_detector(options: DetectorOptions) -> Detector:
    """Load the embedder and classifier described by ``options``."""
    sampling = options.sampling or SamplingConfig()
    if options.bundle is not None:
        bundle = load_bundle(options.bundle)
        spec = dataclasses.replace(bundle.embedder, device=options.device, batch_size=options.batch_size)
        embedder = ClipEmbedder(spec)
        classifier = bundle.classifier
        policies = dict(bundle.policies)
        frames = options.frames or bundle.frames
        info = ModelInfo(
            name=bundle.name,
            version=bundle.model_version,
            classifier=bundle.classifier_kind,
            embedder=embedder.describe(),
            untrained=embedder.untrained,
        )
    else:
        spec = EmbedderSpec.from_names(
            options.model,
            options.pretrained,
            weights=options.weights,
            device=options.device,
            batch_size=options.batch_size,
        )
        embedder = ClipEmbedder(spec)
        classifier = fit_prompt_classifier(embedder, options.prompts or DEFAULT_PROMPTS)
        policies = {"default": Policy()}
        frames = options.frames or sampling.frames
        tag = spec.pretrained or ("ft:" + (embedder.spec.weights_sha256 or "")[:12] if spec.weights else "none")
        info = ModelInfo(
            name=f"{spec.architecture}/{tag}+prompt",
            version=f"{spec.architecture}/{tag}+prompt@builtin-prompts",
            classifier="prompt",
            embedder=embedder.describe(),
            untrained=embedder.untrained,
        )
    sampler = FfmpegSampler(dataclasses.replace(sampling, frames=frames))
    return Detector(
        sampler=sampler,
        embedder=embedder,
        classifier=classifier,
        model=info,
        policies=_override_default_policy(policies, options),
        provenance=ProvenanceReader(options.provenance),
    )
