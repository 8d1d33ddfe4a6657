"""Fakes and constructed data for the training tests.

Constructed embeddings have known answers: every class has its own direction
in a small space, each video a small offset from its class direction and each
frame a little noise around its video.  A head that cannot separate them is
broken.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from detectors.errors import CorruptVideoError
from detectors.training.cache import EmbedCache, EmbeddingIdentity, VideoRecord
from detectors.training.datasets import Dataset, VideoItem
from detectors.types import AI_LABEL, REAL_LABEL, SampledFrames, VideoProbe

DIM = 16


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def class_direction(name: str, dim: int = DIM) -> np.ndarray:
    index = {REAL_LABEL: 0, "genA": 1, "genB": 2, "genC": 3}[name]
    v = np.zeros(dim)
    v[index] = 1.0
    return v


def constructed_frames(
    name: str, video_seed: int, frames: int = 6, spread: float = 0.35, noise: float = 0.1, dim: int = DIM
) -> np.ndarray:
    rng = np.random.default_rng(video_seed)
    centre = class_direction(name, dim) + spread * rng.standard_normal(dim)
    return unit_rows(centre + noise * rng.standard_normal((frames, dim)))


FAKE_IDENTITY = EmbeddingIdentity(
    embedder={
        "architecture": "fake",
        "pretrained": "constructed",
        "weights_sha256": None,
        "image_size": 8,
        "resize_mode": "shortest",
    },
    sampling={"frames": 6, "rate_fps": None, "max_frames": 64, "seek": "accurate"},
    spec={"model": "tiny-test", "pretrained": None, "weights": None, "weights_sha256": None},
)


def constructed_items(counts: Mapping[str, int], group_size: int = 1) -> list[VideoItem]:
    """``counts``: class name -> number of videos; ``group_size`` videos of one class share a group."""
    items = []
    for name, n in counts.items():
        for k in range(n):
            items.append(
                VideoItem(
                    path=f"/constructed/{name}/{k}.mp4",
                    label=REAL_LABEL if name == REAL_LABEL else AI_LABEL,
                    generator=None if name == REAL_LABEL else name,
                    group=f"{name}-g{k // group_size}",
                    action="waving",
                )
            )
    return items


def write_constructed_cache(
    root: Path,
    counts: Mapping[str, int],
    *,
    group_size: int = 1,
    identity: EmbeddingIdentity = FAKE_IDENTITY,
    frames: int = 6,
    spread: float = 0.35,
) -> EmbedCache:
    """An embedding cache holding constructed embeddings, as `embed` would leave it."""
    cache = EmbedCache(root)
    items = constructed_items(counts, group_size)
    records = []
    for seed, item in enumerate(items):
        sha = hashlib.sha256(item.path.encode()).hexdigest()
        embeddings = constructed_frames(item.class_name, seed, frames=frames, spread=spread)
        cache.save(identity, sha, embeddings, np.arange(frames, dtype=np.float64) * 0.5)
        records.append(VideoRecord(item=item, status="ok", sha256=sha, frames=frames))
    dataset = Dataset(name="constructed", source=str(root), kind="manifest", items=tuple(items))
    cache.write_index(dataset, identity, records, complete=True)
    return cache


class ColourEmbedder:
    """Embeds a frame by its mean colour (plus a constant), for cache tests without a model."""

    image_size = 8
    resize_mode = "shortest"
    untrained = False

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.frames_seen = 0
        self.fail_after = fail_after

    def describe(self) -> dict[str, object]:
        return {"name": "colour"}

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # what Ctrl-C looks like in the middle of a run
        self.calls += 1
        self.frames_seen += len(frames)
        mean = frames.reshape(len(frames), -1, 3).mean(axis=1) / 255.0
        return unit_rows(np.column_stack([mean, np.ones(len(frames))]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("not used")


class NameSampler:
    """Pretends to decode: the file's first byte is the grey level; files named ``bad*`` are corrupt."""

    def __init__(self, frames: int = 3) -> None:
        self.frames = frames
        self.calls: list[str] = []

    def sample(self, path: str | os.PathLike[str], image_size: int, resize_mode: str = "shortest") -> SampledFrames:
        self.calls.append(str(path))
        if Path(path).name.startswith("bad"):
            raise CorruptVideoError("the video could not be decoded (constructed)")
        level = Path(path).read_bytes()[0]
        frames = np.full((self.frames, image_size, image_size, 3), level, dtype=np.uint8)
        probe = VideoProbe(str(path), "mov", "h264", image_size, image_size, 0, 1.0, 25.0, 25, 10)
        return SampledFrames(frames=frames, timestamps_seconds=np.arange(self.frames) * 0.25, probe=probe)


def byte_files(root: Path, levels: Mapping[str, int]) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, level in levels.items():
        path = root / name
        path.write_bytes(bytes([level]) * 16)
        paths.append(path)
    return paths


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The tiny test model gains nothing from intra-op threads; on a small shared machine two
    threads contend and make each step ten times slower.  Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def constructed_cache(tmp_path: Path) -> EmbedCache:
    return write_constructed_cache(tmp_path / "cache", {REAL_LABEL: 14, "genA": 7, "genB": 7}, spread=0.15)


# --- synthetic videos (real ffmpeg) -------------------------------------------------------

#: Two visually different kinds of footage standing in for "real" and two "generators":
#: ffmpeg's moving test pattern with a different hue and saturation per video plays the
#: camera footage; fractal zooms and Conway's game of life play two text-to-video models.
#: Whatever a model learns here is about these patterns, not about AI-generated motion.
SYNTHETIC_SOURCES: dict[str, tuple[str, str | None]] = {
    REAL_LABEL: ("testsrc2", "hue=h={hue}:s={saturation}"),
    "fractal": ("mandelbrot=start_scale={scale}:end_scale=0.3", None),
    "automaton": ("life=seed={k}:mold=10:ratio=0.{ratio}", None),
}


def make_synthetic_manifest(
    root: Path, counts: Mapping[str, int], *, size: int = 64, seconds: float = 1.0, offset: int = 0
) -> Path:
    """Encode ``counts[class]`` videos per class with ffmpeg and write ``root/manifest.csv``.

    Every video is its own group.  ``offset`` shifts the seeds, for fresh videos
    of the same kinds.
    """
    from detectors.training.datasets import write_manifest
    from tests.videofactory import make_video

    items = []
    for name, n in counts.items():
        for k in range(offset, offset + n):
            values = {"k": k + 1, "scale": 2.0 + 0.25 * (k % 8), "ratio": 2 + k % 6, "hue": (k * 41) % 360,
                      "saturation": 0.6 + 0.1 * (k % 5)}  # fmt: skip
            source, video_filter = SYNTHETIC_SOURCES[name]
            extra = ["-vf", video_filter.format(**values)] if video_filter else []
            path = make_video(root / name / f"{name}-{k}.mp4", seconds=seconds, width=size, height=size,
                              fps=12, source=source.format(**values), extra_args=extra)  # fmt: skip
            items.append(
                VideoItem(
                    path=str(path.resolve()),
                    label=REAL_LABEL if name == REAL_LABEL else AI_LABEL,
                    generator=None if name == REAL_LABEL else name,
                    group=f"{name}-{k}",
                    action="moving" if name == REAL_LABEL else None,
                )
            )
    return write_manifest(root / "manifest.csv", items)
