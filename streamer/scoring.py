"""The per-event path: one upload event to exactly one outcome on Kafka::

    parse + validate -> fetch (file:// or http(s), in a decode thread) -> read
    the Content Credentials and sample with ffmpeg (same thread) -> embed (a
    shared model batch) -> classify + vote -> verdict on video-verdicts (and,
    for a failure, the original event plus the reason on video-uploads-dlq)

The frames of concurrent events meet in one :class:`streamer.batcher.ModelBatcher`.

:meth:`UploadScorer.handle_upload` is the uploads consumer's handler
(:mod:`streamer.uploads`): it returns once the event's outcome is on Kafka,
so the consumer may then commit its offset.  Bad input becomes an error
verdict plus a dead letter, and so does an unexpected failure.  Every send
waits for ``acks=all`` and retries while Kafka cannot take it; while one has
waited longer than ``DELIVERY_STALL_SECONDS``, :meth:`UploadScorer.delivering`
is false and the worker reports not-ready.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from detectors.errors import InternalError, MotionGuardError
from detectors.pipeline import Detector, ScanResult
from detectors.provenance import Provenance
from detectors.types import SampledFrames
from streamer.batcher import ModelBatcher
from streamer.metrics import WorkerMetrics
from streamer.outcomes import OutcomeProducer
from streamer.schemas import (
    UploadEvent,
    VerdictContext,
    dead_letter_record,
    guess_video_id,
    utc_now,
    verdict_record,
)
from streamer.settings import WorkerSettings
from streamer.sources import SourcePolicy, fetch_with_retries

logger = logging.getLogger(__name__)

SEND_RETRY_MAX_SECONDS = 30.0
#: A verdict or dead letter not delivered after this long makes the worker not ready (a healthy
#: ``acks=all`` delivery takes milliseconds; the producer itself keeps retrying much longer).
DELIVERY_STALL_SECONDS = 15.0


@dataclass
class _Prepared:
    upload: UploadEvent
    frames: SampledFrames
    provenance: Provenance
    fetch_seconds: float
    provenance_seconds: float
    decode_seconds: float


class UploadScorer:
    """Scores upload events and delivers their verdicts and dead letters to Kafka."""

    def __init__(
        self,
        *,
        settings: WorkerSettings,
        detector: Detector,
        metrics: WorkerMetrics,
        sources: SourcePolicy,
        decode_pool: ThreadPoolExecutor,
        batcher: ModelBatcher,
        outcomes: OutcomeProducer,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.metrics = metrics
        self.sources = sources
        self.decode_pool = decode_pool
        self.batcher = batcher
        self.outcomes = outcomes
        #: When each delivery under way started (by a counter), to tell a stalled delivery.
        self.deliveries: dict[int, float] = {}
        self._delivery_count = itertools.count()

    def _prepare(self, upload: UploadEvent) -> _Prepared:
        """Fetch one video, read its Content Credentials and sample it (runs in a decode thread)."""
        started = time.perf_counter()
        with fetch_with_retries(
            upload.uri,
            self.sources,
            self.settings.fetch_retries,
            self.settings.retry_backoff_seconds,
            on_retry=lambda _: self.metrics.retries.labels(stage="fetch").inc(),
        ) as path:
            fetched = time.perf_counter()
            provenance = self.detector.read_provenance(path)
            read = time.perf_counter()
            frames = self.detector.sample(path)
        return _Prepared(upload, frames, provenance, fetched - started, read - fetched, time.perf_counter() - read)

    async def handle_upload(self, key: bytes | None, raw: bytes | None) -> None:
        """Bring one upload event to exactly one outcome on Kafka; raises only when cancelled.

        Bad input becomes an error verdict plus a dead-letter record; so does an
        unexpected failure (as ``internal_error``), because an event that never
        gets an outcome would hold back its partition's committed offset forever.
        """
        logger.debug("upload event received, key %r", key)
        received = utc_now()
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        upload: UploadEvent | None = None
        try:
            try:
                upload = UploadEvent.parse(raw)
                result = await self._score(upload)
            except Exception as e:
                video_id = upload.video_id if upload else guess_video_id(raw, key)
                error = e if isinstance(e, MotionGuardError) else None
                if error is None:
                    logger.exception("video %s: unexpected failure", video_id or "?")
                    error = InternalError(f"unexpected {type(e).__name__} while processing: {e}")
                await self._fail(video_id, upload, raw, error, received, started)
                return
            await self._deliver(upload.video_id, upload, result, received, started)
        finally:
            self.metrics.in_flight.dec()

    async def _score(self, upload: UploadEvent) -> ScanResult:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self.decode_pool, self._prepare, upload)
        self.metrics.stage_seconds.labels(stage="fetch").observe(prepared.fetch_seconds)
        self.metrics.stage_seconds.labels(stage="provenance").observe(prepared.provenance_seconds)
        provenance = prepared.provenance
        self.metrics.provenance_reads.labels(
            state=provenance.state, ai_declared=str(provenance.ai_declared).lower()
        ).inc()
        self.metrics.stage_seconds.labels(stage="decode").observe(prepared.decode_seconds)
        embed_started = time.perf_counter()
        embeddings = await self.batcher.embed(prepared.frames)
        embed_seconds = time.perf_counter() - embed_started
        classify_started = time.perf_counter()
        policy = self.detector.policy(upload.policy)
        score = self.detector.decide(prepared.frames, embeddings, policy)
        decision = self.detector.conclude(score, provenance, policy)
        classify_seconds = time.perf_counter() - classify_started
        self.metrics.stage_seconds.labels(stage="classify").observe(classify_seconds)
        return ScanResult(
            source=upload.uri,
            model=self.detector.model,
            score=score,
            policy=policy.name,
            duration_seconds=prepared.frames.probe.duration_seconds,
            provenance=provenance,
            decision=decision,
            timings_ms={
                "fetch": prepared.fetch_seconds * 1000,
                "provenance": prepared.provenance_seconds * 1000,
                "sample": prepared.decode_seconds * 1000,
                "embed": embed_seconds * 1000,
                "classify": classify_seconds * 1000,
            },
        )

    async def _fail(
        self,
        video_id: str | None,
        upload: UploadEvent | None,
        raw: bytes | None,
        error: MotionGuardError,
        received: Any,
        started: float,
    ) -> None:
        logger.info("video %s: %s (%s)", video_id or "?", error.message, error.code)
        self.metrics.errors.labels(reason=error.code).inc()
        result = ScanResult(
            source=upload.uri if upload else "",
            model=self.detector.model,
            error=error,
            policy=(upload.policy or "default") if upload else "default",
        )
        record = dead_letter_record(raw, error, video_id, self.settings.worker_name)
        await self._send(self.settings.topic_dead_letters, video_id, record)
        self.metrics.dead_letters.labels(reason=error.code).inc()
        await self._deliver(video_id, upload, result, received, started)

    async def _deliver(
        self,
        video_id: str | None,
        upload: UploadEvent | None,
        result: ScanResult,
        received: Any,
        started: float,
    ) -> None:
        context = VerdictContext(
            video_id=video_id,
            model_version=self.detector.model.version,
            uploaded_at=upload.uploaded_at if upload is not None else None,
            received_at=received,
            decided_at=utc_now(),
            processing_seconds=time.perf_counter() - started,
            worker=self.settings.worker_name,
        )
        verdict = verdict_record(result, context)
        processing_seconds = context.processing_seconds
        upload_to_verdict = context.upload_to_verdict_seconds
        await self._send(self.settings.topic_verdicts, video_id, json.dumps(verdict).encode())
        logger.info(
            "video %s: %s (score %s) in %.3f s",
            video_id or "?",
            result.verdict,
            verdict["score"],
            processing_seconds,
        )
        self.metrics.videos_processed.labels(verdict=result.verdict).inc()
        if result.decided_by is not None:
            self.metrics.verdicts_decided.labels(decided_by=result.decided_by, verdict=result.verdict).inc()
        self.metrics.processing_seconds.observe(processing_seconds)
        if upload_to_verdict is not None:
            self.metrics.upload_to_verdict_seconds.observe(upload_to_verdict)

    async def _send(self, topic: str, key: str | None, value: bytes) -> None:
        """Send and wait for delivery (``acks=all``), retrying while Kafka cannot take it.

        While a delivery has waited longer than ``DELIVERY_STALL_SECONDS`` (the partition
        has no leader, or fewer in-sync replicas than ``min.insync.replicas``) the worker
        reports not-ready; the event's offset is not committed until its outcome is
        delivered, so nothing is lost meanwhile."""
        delay = 0.5
        token = next(self._delivery_count)
        self.deliveries[token] = time.monotonic()
        try:
            while True:
                try:
                    await self.outcomes.send(topic, key.encode() if key else None, value)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # aiokafka raises several KafkaError types for an unavailable broker
                    self.metrics.retries.labels(stage="produce").inc()
                    logger.warning("cannot deliver to %s (%s); retrying in %.1f s", topic, e, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, SEND_RETRY_MAX_SECONDS)
        finally:
            del self.deliveries[token]

    def delivering(self) -> bool:
        """No verdict or dead letter has been waiting for Kafka longer than ``DELIVERY_STALL_SECONDS``."""
        now = time.monotonic()
        return all(now - started < DELIVERY_STALL_SECONDS for started in self.deliveries.values())
