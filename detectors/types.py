"""Value types and the small seams (``Protocol``s) between the stages of the core.

The pipeline is ``FrameSampler -> Embedder -> FrameClassifier -> Voter``.  Each
stage only sees numpy arrays from the previous one, so a fast fake can stand in
for any stage in a test that is about another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

#: Label used by every classifier for camera footage.  Every other label is
#: either ``AI_LABEL`` (two-class heads) or the name of a generator.
REAL_LABEL = "real"
AI_LABEL = "ai_generated"

VerdictLabel = Literal["ai_generated", "real", "needs_review", "error"]

FloatArray = npt.NDArray[np.float32]
UInt8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class VideoProbe:
    """What ``ffprobe`` says about a file, normalised.

    ``width`` and ``height`` are the *display* size, i.e. after applying
    ``rotation`` (a portrait phone video stored as 1920x1080 with a 90 degree
    display matrix has ``width=1080, height=1920``).
    """

    path: str
    container: str
    codec: str
    width: int
    height: int
    rotation_degrees: int
    duration_seconds: float
    frame_rate: float
    frame_count: int | None
    size_bytes: int


@dataclass(frozen=True)
class SampledFrames:
    """Frames taken from one video, already at the model's input size.

    ``frames`` is ``(n, size, size, 3)`` RGB ``uint8``; ``timestamps_seconds[i]``
    is the presentation time of frame ``i`` as decoded, in seconds from the
    start of the file (not the time that was asked for).  ``frames_decoded``
    is how many frames the decoder produced to get them (``None``: not
    known), ``decode_mode`` how they were decoded (the sampler's word, e.g.
    ``one_pass`` or ``seek``); both describe cost, not content.
    """

    frames: UInt8Array
    timestamps_seconds: npt.NDArray[np.float64]
    probe: VideoProbe
    frames_decoded: int | None = None
    decode_mode: str = ""

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@runtime_checkable
class FrameSampler(Protocol):
    """Turns a local video file into a handful of model-sized frames."""

    def sample(self, path: str | os.PathLike[str], image_size: int, resize_mode: str = "shortest") -> SampledFrames:
        """``resize_mode`` is open_clip's: ``shortest`` (resize + centre crop) or ``squash``."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """A CLIP-family model: images and texts to L2-normalised float32 vectors."""

    @property
    def image_size(self) -> int: ...

    @property
    def untrained(self) -> bool:
        """True when the weights are random: verdicts are then meaningless."""
        ...

    @property
    def resize_mode(self) -> str:
        """How the model's preprocessing fits a frame to a square: shortest or squash."""
        ...

    def describe(self) -> dict[str, object]:
        """JSON-ready description (name, pretrained tag or weights hash)."""
        ...

    def embed_frames(self, frames: UInt8Array) -> FloatArray: ...

    def embed_texts(self, texts: Sequence[str]) -> FloatArray: ...


@runtime_checkable
class FrameClassifier(Protocol):
    """Per-frame probabilities over ``classes_`` (scikit-learn contract).

    ``classes_`` always contains :data:`REAL_LABEL`; the probability that a
    frame is AI-generated is ``1 - P(real)``.
    """

    classes_: npt.NDArray[np.str_]

    def predict_proba(self, X: FloatArray) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class Segment:
    """Score over a window of consecutive sampled frames.

    ``frame_seconds`` are the times of the frames that were scored, as decoded
    (``start_seconds`` is the first, ``end_seconds`` the last), and
    ``frame_probabilities`` each frame's probability of being AI-generated.
    """

    start_seconds: float
    end_seconds: float
    score: float
    frames: int
    frame_seconds: tuple[float, ...] = ()
    frame_probabilities: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "start_seconds": round(self.start_seconds, 3),
            "end_seconds": round(self.end_seconds, 3),
            "score": round(self.score, 4),
            "frames": self.frames,
            "frame_seconds": [round(t, 3) for t in self.frame_seconds],
            "frame_probabilities": [round(p, 4) for p in self.frame_probabilities],
        }


@dataclass(frozen=True)
class GeneratorGuess:
    name: str
    probability: float

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "probability": round(self.probability, 4)}


@dataclass(frozen=True)
class VideoScore:
    """Aggregated result for one video, before timing/model metadata is added."""

    verdict: VerdictLabel
    score: float
    vote_fraction: float
    mean_probability: float
    frames_scored: int
    segments: tuple[Segment, ...] = ()
    generator: tuple[GeneratorGuess, ...] | None = None
    frame_probabilities: tuple[float, ...] = field(default=(), repr=False)
