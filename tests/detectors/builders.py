"""Detectors the detection-core tests build from an embedder they already hold."""

from __future__ import annotations

from detectors.embedding import ClipEmbedder
from detectors.pipeline import Detector, ModelInfo
from detectors.prompts import fit_prompt_classifier
from detectors.sampling import FfmpegSampler, SamplingConfig


def prompt_detector(embedder: ClipEmbedder, sampler: FfmpegSampler | None = None) -> Detector:
    """A frame-to-prompt detector on ``embedder`` sampling 4 frames (or with ``sampler``)."""
    return Detector(
        sampler=sampler if sampler is not None else FfmpegSampler(SamplingConfig(frames=4)),
        embedder=embedder,
        classifier=fit_prompt_classifier(embedder),
        model=ModelInfo("test", "test@1", "prompt", embedder.describe(), untrained=True),
    )
