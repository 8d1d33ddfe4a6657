"""Embed every video of a dataset once and keep the per-frame embeddings.

Layout of a cache directory::

    CACHE/
      index.json                      the last run: dataset, embedder, sampling and,
                                      per video, its content hash and status
      hashes.json                     path + size + mtime -> sha256 (saves re-hashing)
      entries/<identity>/<ab>/<sha256>[.<variant>].npz
                                      embeddings (n, d) float32 + timestamps (n,)

An entry is keyed by the video's *content* hash and by the embedding
*identity* (architecture, pretrained tag or fine-tuned weights hash, input size
and the sampling settings), so a renamed file is not embedded again and a
changed embedder never reuses stale vectors.  Entries are written atomically
(temporary file then rename), one per video as soon as it is done: an
interrupted run keeps everything finished so far, and the next run only does
the rest.  ``variant`` entries hold the robustness re-runs (a re-scaled or
re-encoded copy of the same source).

A video that cannot be read is recorded with its error code and message and
counted; it never stops the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from detectors import __version__
from detectors.embedding import ClipEmbedder, EmbedderSpec, sha256_file
from detectors.errors import CorruptVideoError, DatasetError, MotionGuardError, VideoNotFoundError
from detectors.training.datasets import Dataset, VideoItem
from detectors.types import Embedder, FloatArray, FrameSampler, SampledFrames

logger = logging.getLogger(__name__)

CACHE_FORMAT = "motionguard-embed-cache"
CACHE_FORMAT_VERSION = 1
INDEX_NAME = "index.json"
HASHES_NAME = "hashes.json"
ENTRIES_DIR = "entries"

Status = Literal["ok", "error", "pending"]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class EmbeddingIdentity:
    """Everything that changes the vectors an entry holds.

    ``embedder`` names the weights (architecture, pretrained tag, fine-tuned
    weights hash, input size); ``sampling`` the frame choice.  ``spec`` is the
    :class:`~detectors.embedding.EmbedderSpec` as a dict, kept to rebuild the
    embedder (its file paths and device are not part of the key).
    """

    embedder: Mapping[str, Any]
    sampling: Mapping[str, Any]
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        canonical = json.dumps({"embedder": self.embedder, "sampling": self.sampling}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]

    @property
    def untrained(self) -> bool:
        return self.embedder.get("pretrained") is None and self.embedder.get("weights_sha256") is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "embedder": dict(self.embedder),
            "sampling": dict(self.sampling),
            "spec": dict(self.spec),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddingIdentity:
        return cls(embedder=dict(data["embedder"]), sampling=dict(data["sampling"]), spec=dict(data.get("spec", {})))


def build_embedder(spec: EmbedderSpec) -> ClipEmbedder:
    """A :class:`~detectors.embedding.ClipEmbedder`.

    ``embed``, ``train``, ``evaluate`` and ``scan`` run in separate processes; an
    untrained model is initialised from :data:`~detectors.embedding.RANDOM_INIT_SEED`
    by the embedder itself, so they all build the same random model under the
    same cache identity.
    """
    return ClipEmbedder(spec)


def identity_for(embedder: Any, sampling: Any) -> EmbeddingIdentity:
    """The identity of a :class:`~detectors.embedding.ClipEmbedder` and a ``SamplingConfig``."""
    spec = embedder.spec
    return EmbeddingIdentity(
        embedder={
            "architecture": spec.architecture,
            "pretrained": spec.pretrained,
            "weights_sha256": spec.weights_sha256,
            "image_size": int(embedder.image_size),
            "resize_mode": str(embedder.resize_mode),
        },
        sampling={
            "frames": sampling.frames,
            "rate_fps": sampling.rate_fps,
            "max_frames": sampling.max_frames,
            "seek": sampling.seek,
            **({"keyframe_tolerance": sampling.keyframe_tolerance} if sampling.seek == "nearest_keyframe" else {}),
        },
        spec={
            "model": spec.model,
            "pretrained": spec.pretrained,
            "weights": None if spec.weights is None else os.path.abspath(spec.weights),
            "weights_sha256": spec.weights_sha256,
        },
    )


@dataclass(frozen=True)
class VideoRecord:
    """One dataset video's state in the cache."""

    item: VideoItem
    status: Status
    sha256: str | None = None
    frames: int = 0
    cached: bool = False
    error_code: str | None = None
    error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.item.to_dict(),
            "status": self.status,
            "sha256": self.sha256,
            "frames": self.frames,
            "error": None if self.error_code is None else {"code": self.error_code, "message": self.error_message},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoRecord:
        error = data.get("error") or {}
        return cls(
            item=VideoItem.from_dict(data),
            status=data["status"],
            sha256=data.get("sha256"),
            frames=int(data.get("frames", 0)),
            error_code=error.get("code"),
            error_message=error.get("message"),
        )


@dataclass(frozen=True)
class CacheIndex:
    """What ``index.json`` says: the dataset, the identity and one record per video."""

    dataset: Mapping[str, Any]
    identity: EmbeddingIdentity
    records: tuple[VideoRecord, ...]
    complete: bool

    @property
    def ok(self) -> list[VideoRecord]:
        return [r for r in self.records if r.status == "ok"]

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "error": 0, "pending": 0}
        for record in self.records:
            counts[record.status] += 1
        return counts


@dataclass(frozen=True)
class EmbeddedVideos:
    """Per-frame embeddings of several videos, stacked.

    Row ``i`` of ``X`` is a frame of ``videos[video[i]]`` taken at
    ``timestamps[i]`` seconds.
    """

    X: FloatArray
    video: npt.NDArray[np.intp]
    timestamps: npt.NDArray[np.float64]
    videos: tuple[VideoRecord, ...]

    def subset(self, keep: Sequence[int]) -> EmbeddedVideos:
        """Only the videos with the given indices (renumbered in that order)."""
        remap = {old: new for new, old in enumerate(keep)}
        rows = np.flatnonzero(np.isin(self.video, list(keep)))
        return EmbeddedVideos(
            X=self.X[rows],
            video=np.array([remap[int(v)] for v in self.video[rows]], dtype=np.intp),
            timestamps=self.timestamps[rows],
            videos=tuple(self.videos[i] for i in keep),
        )

    def frame_attr(self, getter: Callable[[VideoRecord], Any]) -> npt.NDArray[Any]:
        """A per-frame array of some attribute of each frame's video."""
        values = np.array([getter(record) for record in self.videos], dtype=object)
        if len(values) == 0:
            return np.array([], dtype=object)
        return values[self.video]


def _utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class EmbedCache:
    """A cache directory (see the module docstring for its layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._hashes: dict[str, dict[str, Any]] | None = None

    # -- entries ------------------------------------------------------------------------

    def entry_path(self, identity: EmbeddingIdentity, sha256: str, variant: str | None = None) -> Path:
        suffix = f".{variant}" if variant else ""
        return self.root / ENTRIES_DIR / identity.key / sha256[:2] / f"{sha256}{suffix}.npz"

    def has(self, identity: EmbeddingIdentity, sha256: str, variant: str | None = None) -> bool:
        return self.entry_path(identity, sha256, variant).is_file()

    def load(
        self, identity: EmbeddingIdentity, sha256: str, variant: str | None = None
    ) -> tuple[FloatArray, npt.NDArray[np.float64]] | None:
        path = self.entry_path(identity, sha256, variant)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                embeddings = np.asarray(data["embeddings"], dtype=np.float32)
                timestamps = np.asarray(data["timestamps"], dtype=np.float64)
        except (OSError, ValueError, KeyError) as e:
            logger.warning("unreadable cache entry %s (%s): it will be recomputed", path, e)
            return None
        return embeddings, timestamps

    def save(
        self,
        identity: EmbeddingIdentity,
        sha256: str,
        embeddings: FloatArray,
        timestamps: npt.NDArray[np.float64],
        variant: str | None = None,
    ) -> Path:
        path = self.entry_path(identity, sha256, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    embeddings=np.asarray(embeddings, dtype=np.float32),
                    timestamps=np.asarray(timestamps, dtype=np.float64),
                )
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return path

    # -- content hashes -----------------------------------------------------------------

    def _hash_memo(self) -> dict[str, dict[str, Any]]:
        if self._hashes is None:
            path = self.root / HASHES_NAME
            try:
                loaded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            except (OSError, json.JSONDecodeError):
                loaded = {}
            self._hashes = loaded if isinstance(loaded, dict) else {}
        return self._hashes

    def content_hash(self, path: str) -> str:
        """sha256 of a file, remembered by path, size and modification time."""
        st = os.stat(path)
        memo = self._hash_memo()
        known = memo.get(path)
        if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
            return str(known["sha256"])
        digest = sha256_file(path)
        memo[path] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        return digest

    def flush_hashes(self) -> None:
        if self._hashes is not None:
            _atomic_write_text(self.root / HASHES_NAME, json.dumps(self._hashes, indent=0, sort_keys=True))

    # -- index --------------------------------------------------------------------------

    def write_index(
        self,
        dataset: Dataset,
        identity: EmbeddingIdentity,
        records: Sequence[VideoRecord],
        *,
        complete: bool,
    ) -> Path:
        counts = {"ok": 0, "error": 0, "pending": 0}
        for record in records:
            counts[record.status] += 1
        index = {
            "format": CACHE_FORMAT,
            "format_version": CACHE_FORMAT_VERSION,
            "written_at": _utc_now(),
            "written_by": f"motionguard {__version__}",
            "complete": complete,
            "dataset": {"name": dataset.name, "source": dataset.source, "kind": dataset.kind},
            "identity": identity.to_dict(),
            "counts": counts,
            "videos": [record.to_dict() for record in records],
        }
        path = self.root / INDEX_NAME
        _atomic_write_text(path, json.dumps(index, indent=1) + "\n")
        return path

    def read_index(self) -> CacheIndex:
        path = self.root / INDEX_NAME
        if not path.is_file():
            raise DatasetError(f"{self.root} is not an embedding cache ({INDEX_NAME} is missing); run `embed` first")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("format_version") != CACHE_FORMAT_VERSION:
                raise DatasetError(f"{path} is not a version {CACHE_FORMAT_VERSION} MotionGuard embedding cache")
            return CacheIndex(
                dataset=dict(data["dataset"]),
                identity=EmbeddingIdentity.from_dict(data["identity"]),
                records=tuple(VideoRecord.from_dict(v) for v in data["videos"]),
                complete=bool(data.get("complete", False)),
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DatasetError(f"cannot read the embedding cache index {path}: {e}") from e

    def is_cache(self) -> bool:
        return (self.root / INDEX_NAME).is_file()

    # -- reading many entries --------------------------------------------------------------

    def gather(
        self, identity: EmbeddingIdentity, records: Sequence[VideoRecord], variant: str | None = None
    ) -> EmbeddedVideos:
        """Stack the entries of the ``ok`` records that have one (others are skipped)."""
        blocks: list[FloatArray] = []
        stamps: list[npt.NDArray[np.float64]] = []
        owners: list[npt.NDArray[np.intp]] = []
        kept: list[VideoRecord] = []
        for record in records:
            if record.status != "ok" or record.sha256 is None:
                continue
            entry = self.load(identity, record.sha256, variant)
            if entry is None or len(entry[0]) == 0:
                continue
            embeddings, timestamps = entry
            owners.append(np.full(len(embeddings), len(kept), dtype=np.intp))
            blocks.append(embeddings)
            stamps.append(timestamps)
            kept.append(record)
        if not kept:
            return EmbeddedVideos(
                X=np.zeros((0, 0), dtype=np.float32),
                video=np.zeros(0, dtype=np.intp),
                timestamps=np.zeros(0, dtype=np.float64),
                videos=(),
            )
        return EmbeddedVideos(
            X=np.concatenate(blocks).astype(np.float32, copy=False),
            video=np.concatenate(owners),
            timestamps=np.concatenate(stamps),
            videos=tuple(kept),
        )


# --- the embedding run ---------------------------------------------------------------


@dataclass(frozen=True)
class EmbedRun:
    """The outcome of :func:`embed_dataset`."""

    records: tuple[VideoRecord, ...]
    embedded: int
    reused: int
    failed: int
    index_path: Path

    @property
    def errors(self) -> list[VideoRecord]:
        return [r for r in self.records if r.status == "error"]


def _error_record(item: VideoItem, sha: str | None, error: Exception) -> VideoRecord:
    if isinstance(error, MotionGuardError):
        code, message = error.code, error.message
    else:
        code, message = "io_error", str(error)
    return VideoRecord(item=item, status="error", sha256=sha, error_code=code, error_message=message)


def embed_dataset(
    dataset: Dataset,
    cache: EmbedCache,
    embedder: Embedder,
    sampler: FrameSampler,
    identity: EmbeddingIdentity,
    *,
    on_video: Callable[[VideoRecord], None] | None = None,
    prefetch: int = 2,
    batch_frames: int = 64,
    write_index: bool = True,
) -> EmbedRun:
    """Sample and embed every video of ``dataset`` that ``cache`` lacks.

    Videos are decoded up to ``prefetch`` ahead in threads; frames of several
    videos share a model call of about ``batch_frames`` frames.  ``on_video`` is
    called once per video, in dataset order, when its record is final.  The
    index is written at the end, and also when the run is interrupted (videos
    not reached are ``pending`` then; the next run picks them up).  With
    ``write_index=False`` (evaluation) only the entries are written, so another
    dataset's index in a shared cache is left alone.
    """
    items = list(dataset.items)
    records: list[VideoRecord | None] = [None] * len(items)
    counters = {"embedded": 0, "reused": 0, "failed": 0}
    image_size, resize_mode = embedder.image_size, embedder.resize_mode

    def sample(path: str) -> SampledFrames | Exception:
        try:
            return sampler.sample(path, image_size, resize_mode=resize_mode)
        except (MotionGuardError, OSError) as e:
            return e

    def finish(index: int, record: VideoRecord) -> None:
        records[index] = record
        counters["failed" if record.status == "error" else ("reused" if record.cached else "embedded")] += 1
        if record.status == "error":
            logger.info("cannot embed %s: %s: %s", record.item.path, record.error_code, record.error_message)
        if on_video is not None:
            on_video(record)

    def embed_batch(batch: list[tuple[int, str, SampledFrames]]) -> None:
        stacked = np.concatenate([sampled.frames for _, _, sampled in batch])
        embeddings = embedder.embed_frames(stacked)
        bounds = np.cumsum([len(sampled) for _, _, sampled in batch])[:-1]
        for (index, sha, sampled), rows in zip(batch, np.split(embeddings, bounds), strict=True):
            cache.save(identity, sha, rows, sampled.timestamps_seconds)
            finish(index, VideoRecord(item=items[index], status="ok", sha256=sha, frames=len(rows)))

    complete = False
    try:
        # Pass 1: content hashes and cache hits (cheap), so only misses are decoded.
        todo: list[tuple[int, str]] = []
        for index, item in enumerate(items):
            try:
                sha = cache.content_hash(item.path)
            except OSError as e:
                finish(index, _error_record(item, None, e if os.path.exists(item.path) else _missing(item)))
                continue
            hit = cache.load(identity, sha)
            if hit is not None:
                finish(index, VideoRecord(item=item, status="ok", sha256=sha, frames=len(hit[0]), cached=True))
            else:
                todo.append((index, sha))
        cache.flush_hashes()
        # Pass 2: decode ahead in threads, embed in shared batches, save each entry at once.
        batch: list[tuple[int, str, SampledFrames]] = []
        paths = [items[index].path for index, _ in todo]
        for (index, sha), sampled in zip(todo, prefetch_map(sample, paths, prefetch), strict=True):
            if isinstance(sampled, Exception):
                finish(index, _error_record(items[index], sha, sampled))
                continue
            if len(sampled) == 0:
                finish(index, _error_record(items[index], sha, _no_frames(items[index])))
                continue
            batch.append((index, sha, sampled))
            if sum(len(s) for _, _, s in batch) >= batch_frames:
                embed_batch(batch)
                batch = []
        if batch:
            embed_batch(batch)
        complete = True
    finally:
        cache.flush_hashes()
        final = [
            record if record is not None else VideoRecord(item=item, status="pending")
            for record, item in zip(records, items, strict=True)
        ]
        index_path = cache.root / INDEX_NAME
        if write_index:
            cache.write_index(dataset, identity, final, complete=complete)
        if not complete:
            done = sum(record.status != "pending" for record in final)
            logger.warning("embedding interrupted after %d of %d videos; rerun to resume", done, len(final))
    return EmbedRun(
        records=tuple(final),
        embedded=counters["embedded"],
        reused=counters["reused"],
        failed=counters["failed"],
        index_path=index_path,
    )


def _missing(item: VideoItem) -> MotionGuardError:
    return VideoNotFoundError(f"video file not found: {item.path}")


def _no_frames(item: VideoItem) -> MotionGuardError:
    return CorruptVideoError(f"no frame could be decoded from {item.path}")


def prefetch_map(fn: Callable[[T], R], inputs: Sequence[T], ahead: int = 2) -> Iterator[R]:
    """``fn`` over ``inputs`` in worker threads, at most ``ahead`` in flight beyond the
    one being consumed, results yielded in input order (bounded memory)."""
    if not inputs:
        return
    with ThreadPoolExecutor(max_workers=max(1, ahead), thread_name_prefix="prefetch") as pool:
        pending: list[Future[R]] = []
        submitted = 0
        try:
            for position in range(len(inputs)):
                while submitted < len(inputs) and submitted <= position + ahead:
                    pending.append(pool.submit(fn, inputs[submitted]))
                    submitted += 1
                yield pending[position].result()
        finally:
            for future in pending:
                future.cancel()
