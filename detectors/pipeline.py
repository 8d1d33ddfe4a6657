"""The detector: sample -> embed -> classify -> vote, with per-stage timings.

:class:`Detector` wires the four seams together.  It exposes the stages
separately (``sample``, ``embed_many``, ``decide``) so the streaming worker can
run decoding in worker threads and batch frames from many videos into one
model call, and a convenience ``scan`` / ``scan_many`` for files.

A bad input never raises out of ``scan``: it becomes a :class:`ScanResult`
whose ``error`` is set.  Programming errors still raise.

Every file's Content Credentials are read beside its frames (in the same
decode thread) and weighed against the content verdict by
:func:`detectors.voting.conclude`; the content score is always reported.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.embedding import UNTRAINED_WARNING
from detectors.errors import MotionGuardError
from detectors.provenance import Provenance, ProvenanceReader, ProvenanceSource
from detectors.types import Embedder, FloatArray, FrameClassifier, FrameSampler, SampledFrames, VideoScore
from detectors.voting import Decision, Policy, conclude, vote

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """What produced a verdict; goes into every verdict as ``model``."""

    name: str
    version: str
    classifier: str
    embedder: Mapping[str, object]
    untrained: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "classifier": self.classifier,
            "embedder": dict(self.embedder),
            "untrained": self.untrained,
        }


@dataclass(frozen=True)
class _Decoded:
    """One file after the decode thread: its frames (or why not) and its provenance."""

    source: str
    sampled: SampledFrames | MotionGuardError
    sample_ms: float
    provenance: Provenance
    provenance_ms: float


@dataclass
class ScanResult:
    """One video's outcome: a score or an error, never both."""

    source: str
    model: ModelInfo
    score: VideoScore | None = None
    error: MotionGuardError | None = None
    policy: str = "default"
    timings_ms: dict[str, float] = field(default_factory=dict)
    duration_seconds: float | None = None
    provenance: Provenance = field(default_factory=Provenance)
    decision: Decision | None = None

    @property
    def verdict(self) -> str:
        if self.score is None:
            return "error"
        return self.score.verdict if self.decision is None else self.decision.verdict

    @property
    def decided_by(self) -> str | None:
        """``content`` or ``provenance``; ``None`` for an error verdict."""
        if self.score is None:
            return None
        return "content" if self.decision is None else self.decision.decided_by

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The verdict schema shared by ``scan --json`` and the worker's output topic."""
        score = self.score
        warnings = [UNTRAINED_WARNING] if self.model.untrained else []
        return {
            "source": self.source,
            "verdict": self.verdict,
            "decided_by": self.decided_by,
            "content_verdict": None if score is None else score.verdict,
            "score": None if score is None else round(score.score, 4),
            "vote_fraction": None if score is None else round(score.vote_fraction, 4),
            "mean_probability": None if score is None else round(score.mean_probability, 4),
            "generator": None if score is None or score.generator is None else [g.to_dict() for g in score.generator],
            "frames_scored": 0 if score is None else score.frames_scored,
            "segments": [] if score is None else [s.to_dict() for s in score.segments],
            "policy": self.policy,
            "video_duration_seconds": None if self.duration_seconds is None else round(self.duration_seconds, 3),
            "provenance": self.provenance.to_dict(),
            "model": self.model.to_dict(),
            "timings_ms": self._timings(),
            "warnings": warnings,
            "error": None if self.error is None else self.error.to_dict(),
        }

    def _timings(self) -> dict[str, float]:
        """The stages' milliseconds and their ``total`` (always their sum, wherever the result was made)."""
        stages = {k: v for k, v in self.timings_ms.items() if k != "total"}
        return {**{k: round(v, 2) for k, v in stages.items()}, "total": round(sum(stages.values()), 2)}


class Detector:
    """Scores videos with one sampler, embedder and frame classifier."""

    def __init__(
        self,
        sampler: FrameSampler,
        embedder: Embedder,
        classifier: FrameClassifier,
        model: ModelInfo,
        policies: Mapping[str, Policy] | None = None,
        provenance: ProvenanceSource | None = None,
    ) -> None:
        self.sampler = sampler
        self.provenance = provenance if provenance is not None else ProvenanceReader()
        self.embedder = embedder
        self.classifier = classifier
        self.model = model
        self.policies = dict(policies or {"default": Policy()})
        if "default" not in self.policies:
            raise ValueError("policies must include 'default'")
        self.classes = [str(c) for c in classifier.classes_]

    def policy(self, name: str | None) -> Policy:
        """The named policy; unknown names fall back to ``default`` with a debug log."""
        if name and name in self.policies:
            return self.policies[name]
        if name and name != "default":
            logger.debug("unknown policy %r, using default", name)
        return self.policies["default"]

    # -- stages -------------------------------------------------------------------

    def sample(self, path: str | os.PathLike[str]) -> SampledFrames:
        return self.sampler.sample(path, self.embedder.image_size, self.embedder.resize_mode)

    def read_provenance(self, path: str | os.PathLike[str]) -> Provenance:
        """The file's Content Credentials (never raises for a bad file)."""
        return self.provenance.read(path)

    def embed_many(self, batch: Sequence[SampledFrames]) -> list[FloatArray]:
        """Embed the frames of several videos in shared model batches."""
        if not batch:
            return []
        stacked = np.concatenate([item.frames for item in batch])
        embeddings = self.embedder.embed_frames(stacked)
        bounds = np.cumsum([len(item) for item in batch])[:-1]
        return list(np.split(embeddings, bounds))

    def decide(self, sampled: SampledFrames, embeddings: FloatArray, policy: Policy) -> VideoScore:
        proba = self.classifier.predict_proba(embeddings)
        return vote(np.asarray(proba, dtype=np.float64), self.classes, sampled.timestamps_seconds, policy)

    def conclude(self, score: VideoScore, provenance: Provenance, policy: Policy) -> Decision:
        """The verdict from the content score and the provenance (:func:`detectors.voting.conclude`)."""
        return conclude(score.verdict, provenance, policy)

    # -- whole files --------------------------------------------------------------

    def scan(self, path: str | os.PathLike[str], policy: str | None = None) -> ScanResult:
        return next(self.scan_many([path], policy=policy, prefetch=0))

    def scan_many(
        self,
        paths: Iterable[str | os.PathLike[str]],
        policy: str | None = None,
        prefetch: int = 2,
        on_start: Callable[[str], None] | None = None,
        *,
        decode_workers: int | None = None,
        batch_videos: int = 1,
    ) -> Iterator[ScanResult]:
        """Scan files in order, decoding up to ``prefetch`` videos ahead in threads.

        ``decode_workers`` threads run the sampler (each ffmpeg is a process of
        its own, so they decode in parallel); default ``max(1, prefetch)``.  At
        most ``max(prefetch, decode_workers)`` videos are decoded ahead of the
        one being scored (and at least ``batch_videos - 1``).  With ``batch_videos`` > 1 the frames of up to that
        many consecutive videos that are already decoded share one model call;
        a batch never waits for a video that is still decoding.
        """
        if batch_videos < 1:
            raise ValueError(f"batch_videos must be >= 1, got {batch_videos}")
        chosen = self.policy(policy)
        workers = max(1, prefetch if decode_workers is None else decode_workers)
        ahead = max(prefetch, batch_videos - 1) if decode_workers is None else max(prefetch, workers, batch_videos - 1)

        def timed_sample(path: str) -> _Decoded:
            started = time.perf_counter()
            provenance = self.read_provenance(path)
            provenance_ms = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            try:
                sampled: SampledFrames | MotionGuardError = self.sample(path)
            except MotionGuardError as e:
                sampled = e
            return _Decoded(path, sampled, (time.perf_counter() - started) * 1000, provenance, provenance_ms)

        sources = [os.fspath(p) for p in paths]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sample") as pool:
            # Futures are dropped once scored, so memory holds ``ahead + 1`` videos at most.
            pending: dict[int, Future[_Decoded]] = {}
            next_index = 0
            index = 0
            while index < len(sources):
                while next_index < len(sources) and next_index <= index + ahead:
                    pending[next_index] = pool.submit(timed_sample, sources[next_index])
                    next_index += 1
                group = [index]
                while (
                    len(group) < batch_videos and index + len(group) < next_index and pending[index + len(group)].done()
                ):
                    group.append(index + len(group))
                items = []
                for position in group:
                    if on_start is not None:
                        on_start(sources[position])
                    items.append(pending.pop(position).result())
                yield from self._finish_many(items, chosen)
                index += len(group)

    def _finish_many(self, items: Sequence[_Decoded], policy: Policy) -> list[ScanResult]:
        """Score decoded videos with one model call for all of them (errors pass through)."""
        if len(items) == 1:
            return [self._finish(items[0], policy)]
        decoded = [item.sampled for item in items if isinstance(item.sampled, SampledFrames)]
        started = time.perf_counter()
        embedded = iter(self.embed_many(decoded))
        embed_ms = (time.perf_counter() - started) * 1000
        total_frames = max(1, sum(len(sampled) for sampled in decoded))
        results = []
        for item in items:
            if isinstance(item.sampled, MotionGuardError):
                results.append(self._finish(item, policy))
                continue
            share_ms = embed_ms * len(item.sampled) / total_frames
            results.append(self._finish(item, policy, (next(embedded), share_ms)))
        return results

    def _finish(self, item: _Decoded, policy: Policy, embedded: tuple[FloatArray, float] | None = None) -> ScanResult:
        """Score one decoded video; ``embedded`` is its embeddings and embed time (ms) when
        they come from a shared model call."""
        source, sampled, sample_ms = item.source, item.sampled, item.sample_ms
        result = ScanResult(source=source, model=self.model, policy=policy.name, provenance=item.provenance)
        result.timings_ms["provenance"] = item.provenance_ms
        result.timings_ms["sample"] = sample_ms
        if isinstance(sampled, MotionGuardError):
            logger.info("cannot score %s: %s", source, sampled.message)
            result.error = sampled
            return result
        result.duration_seconds = sampled.probe.duration_seconds
        if embedded is None:
            started = time.perf_counter()
            (embeddings,) = self.embed_many([sampled])
            embed_ms = (time.perf_counter() - started) * 1000
        else:
            embeddings, embed_ms = embedded
        started = time.perf_counter()
        result.score = self.decide(sampled, embeddings, policy)
        result.decision = self.conclude(result.score, item.provenance, policy)
        classify_ms = (time.perf_counter() - started) * 1000
        result.timings_ms["embed"] = embed_ms
        result.timings_ms["classify"] = classify_ms
        return result
