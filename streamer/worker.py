"""The streaming worker: a Faust app around the detection core.

Flow per upload event (``video-uploads``, at-least-once)::

    parse + validate -> fetch (file:// or http(s), in a thread) -> sample with
    ffmpeg (same thread) -> embed (shared model batch) -> classify + vote ->
    verdict on ``video-verdicts`` (and, for a failure, the original event plus
    the reason on ``video-uploads-dlq``) -> commit

* The uploads topic is consumed by :class:`streamer.uploads.UploadsConsumer`,
  a service of the Faust app on aiokafka's public consumer API (why: see that
  module).  An uploads offset is committed only when every earlier event of
  its partition has its outcome on Kafka.  A killed worker leaves its
  in-flight events (at most ``batch_max_events``) uncommitted: the next worker
  processes them again, so a ``video_id`` can get a verdict twice (verdicts
  are keyed by ``video_id``: consumers keep the last) but never zero times.
* Up to ``batch_max_events`` events are processed concurrently; their frames
  meet in one :class:`ModelBatcher`, which runs one model call per batch of up
  to ``batch_max_events`` videos or ``batch_window_ms`` milliseconds.
* Decoding and inference run in thread pools, never on the event loop, so
  heartbeats and the web endpoints stay responsive.
* Moderator labels (``moderator-labels``) are joined with the verdicts
  (``video-verdicts``, read back by a Faust agent) by ``video_id`` in Faust
  tables co-partitioned with those two topics, and counted into the accuracy
  metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from detectors.errors import InternalError, MotionGuardError
from detectors.pipeline import Detector, ScanResult
from detectors.provenance import Provenance
from detectors.types import FloatArray, SampledFrames
from streamer.metrics import WorkerMetrics, label_outcome
from streamer.schemas import (
    EventError,
    ModeratorLabel,
    UploadEvent,
    VerdictContext,
    dead_letter_record,
    guess_video_id,
    utc_now,
    verdict_record,
)
from streamer.settings import WorkerSettings
from streamer.sources import SourcePolicy, fetch_with_retries
from streamer.uploads import UploadsConsumer, UploadsService

logger = logging.getLogger(__name__)

SEND_RETRY_MAX_SECONDS = 30.0
#: A verdict or dead letter not delivered after this long makes the worker not ready (a healthy
#: ``acks=all`` delivery takes milliseconds; the producer itself keeps retrying much longer).
DELIVERY_STALL_SECONDS = 15.0
#: The label-join tables keep one window per day (Kafka record time of the event that set the value).
JOIN_WINDOW_SECONDS = 86400.0


@dataclass
class _Pending:
    frames: SampledFrames
    future: asyncio.Future[FloatArray]


@dataclass
class ModelBatcher:
    """Gathers frames from concurrent events into shared model calls."""

    embed_many: Callable[[list[SampledFrames]], list[FloatArray]]
    executor: ThreadPoolExecutor
    metrics: WorkerMetrics
    max_videos: int
    window_seconds: float
    _queue: list[_Pending] = field(default_factory=list)
    _wakeup: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None

    async def embed(self, frames: SampledFrames) -> FloatArray:
        loop = asyncio.get_running_loop()
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="model-batcher")
        future: asyncio.Future[FloatArray] = loop.create_future()
        self._queue.append(_Pending(frames, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                continue
            deadline = loop.time() + self.window_seconds
            while len(self._queue) < self.max_videos and loop.time() < deadline:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, deadline - loop.time()))
                    self._wakeup.clear()
                except TimeoutError:
                    break
            batch, self._queue = self._queue[: self.max_videos], self._queue[self.max_videos :]
            if self._queue:
                self._wakeup.set()
            live = [item for item in batch if not item.future.cancelled()]
            if not live:
                continue
            frames = [item.frames for item in live]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.embed_many, frames)
            except Exception as e:  # a model failure is every waiting event's failure
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            elapsed = time.perf_counter() - started
            total_frames = sum(len(f) for f in frames)
            self.metrics.batch_videos.observe(len(live))
            self.metrics.batch_frames.observe(total_frames)
            self.metrics.frames_embedded.inc(total_frames)
            for item, embeddings in zip(live, results, strict=True):
                self.metrics.stage_seconds.labels(stage="embed").observe(
                    elapsed * len(item.frames) / max(total_frames, 1)
                )
                if not item.future.done():
                    item.future.set_result(embeddings)


@dataclass
class _Prepared:
    upload: UploadEvent
    frames: SampledFrames
    provenance: Provenance
    fetch_seconds: float
    provenance_seconds: float
    decode_seconds: float


class MotionGuardWorker:
    """Owns the Faust app, the detector, the thread pools and the metrics."""

    def __init__(
        self,
        settings: WorkerSettings,
        detector: Detector,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry, settings.accuracy_window)
        self.sources = SourcePolicy.create(
            allowed_roots=settings.allowed_roots,
            allowed_hosts=settings.allowed_hosts,
            allow_private_addresses=settings.allow_private_addresses,
            allowed_private_addresses=settings.allowed_private_addresses,
            max_download_bytes=settings.max_download_bytes,
            timeout_seconds=settings.download_timeout_seconds,
            download_dir=settings.download_dir,
        )
        self.decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.batcher = ModelBatcher(
            embed_many=detector.embed_many,
            executor=self.model_pool,
            metrics=self.metrics,
            max_videos=settings.batch_max_events,
            window_seconds=settings.batch_window_ms / 1000.0,
        )
        self.uploads = UploadsConsumer(settings, self.handle_upload, self.metrics)
        #: When each delivery under way started (by a counter), to tell a stalled delivery.
        self.deliveries: dict[int, float] = {}
        self._delivery_count = itertools.count()
        model = detector.model
        self.metrics.model_info.labels(
            name=model.name,
            version=model.version,
            classifier=model.classifier,
            untrained=str(model.untrained).lower(),
        ).set(1)
        self.app = self._create_app()

    # -- Faust wiring ---------------------------------------------------------------

    def _create_app(self) -> faust.App:
        s = self.settings
        Path(s.data_dir).mkdir(parents=True, exist_ok=True)
        credentials: Any = None
        ssl_context = s.ssl_context()
        if s.security_protocol.startswith("SASL"):
            credentials = faust.SASLCredentials(
                username=s.sasl_username,
                password=s.sasl_secret(),
                mechanism=s.sasl_mechanism,
                ssl_context=ssl_context,
            )
        elif ssl_context is not None:
            credentials = ssl_context
        app = faust.App(
            s.app_id,
            broker=s.faust_broker,
            broker_credentials=credentials,
            store="memory://",
            datadir=s.data_dir,
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication_factor,
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            web_host=s.web_host,
            web_port=s.web_port,
            web_bind=s.web_host,
            producer_acks=-1,
            stream_wait_empty=True,
            table_cleanup_interval=60.0,
        )

        def raw_topic(name: str) -> Any:
            return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=s.topic_partitions)

        topics = s.topics
        verdicts, labels = raw_topic(topics.verdicts), raw_topic(topics.labels)
        self.verdicts_topic = verdicts
        self.dead_letter_topic = raw_topic(topics.dead_letters)

        # video_id -> verdict; video_id -> label waiting for its verdict; video_id -> label counted.
        # Daily tumbling windows that expire after label_join_days keep memory bounded: a
        # verdict older than that can no longer be joined with its label.
        def joined_table(name: str) -> Any:
            table = app.Table(name, default=None, partitions=s.topic_partitions)
            return table.tumbling(JOIN_WINDOW_SECONDS, expires=s.label_join_days * JOIN_WINDOW_SECONDS)

        self.predictions = joined_table("predictions")
        self.waiting_labels = joined_table("waiting-labels")
        self.counted_labels = joined_table("counted-labels")

        async def join_verdicts(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                self.handle_verdict(event.key, event.value)

        async def join_labels(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                self.handle_label(event.key, event.value)

        app.agent(verdicts, name="join-verdicts")(join_verdicts)
        app.agent(labels, name="join-labels")(join_labels)

        async def consume_uploads() -> None:
            # A runtime dependency starts once the app (its producer, the tables) is up and
            # stops before it: events in flight at SIGTERM still reach the producer.
            await app.add_runtime_dependency(UploadsService(self.uploads))

        app.task(consume_uploads)
        app.timer(1.0, name="readiness")(self._update_ready)
        self._add_pages(app)
        return app

    def _add_pages(self, app: faust.App) -> None:
        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "alive"})

        async def ready(web: Any, request: Any) -> Any:
            assigned, delivering = self.uploads.assigned, self.delivering()
            ok = assigned and delivering
            self.metrics.ready.set(1 if ok else 0)
            return web.json(
                {
                    "ready": ok,
                    "model": self.detector.model.version,
                    "partitions_assigned": assigned,
                    "delivering": delivering,
                },
                status=200 if ok else 503,
            )

        app.page("/metrics")(metrics_page)
        app.page("/healthz")(healthz)
        app.page("/ready")(ready)

    # -- per-event processing ----------------------------------------------------------

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
        await self._send(self.dead_letter_topic, video_id, record)
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
        await self._send(self.verdicts_topic, video_id, json.dumps(verdict).encode())
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

    async def _send(self, topic: Any, key: str | None, value: bytes) -> None:
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
                    future = await topic.send(key=key.encode() if key else None, value=value)
                    await future
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # aiokafka raises several KafkaError types for an unavailable broker
                    self.metrics.retries.labels(stage="produce").inc()
                    logger.warning("cannot deliver to %s (%s); retrying in %.1f s", topic.get_topic_name(), e, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, SEND_RETRY_MAX_SECONDS)
        finally:
            del self.deliveries[token]

    def delivering(self) -> bool:
        """No verdict or dead letter has been waiting for Kafka longer than ``DELIVERY_STALL_SECONDS``."""
        now = time.monotonic()
        return all(now - started < DELIVERY_STALL_SECONDS for started in self.deliveries.values())

    async def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.uploads.assigned and self.delivering() else 0)

    # -- moderator labels --------------------------------------------------------------

    def handle_verdict(self, key: bytes | None, raw: bytes | None) -> None:
        """Remember a verdict read back from the verdicts topic for the label join."""
        try:
            verdict = json.loads(raw or b"")
            video_id, value = verdict["video_id"], verdict["verdict"]
        except (ValueError, TypeError, KeyError):
            logger.warning("ignoring a record on the verdicts topic that is not a verdict (key %r)", key)
            return
        if isinstance(video_id, str) and isinstance(value, str):
            self._remember_verdict(video_id, value)

    def handle_label(self, key: bytes | None, raw: bytes | None) -> None:
        try:
            label = ModeratorLabel.parse(raw)
        except EventError as e:
            logger.warning("ignoring malformed moderator label: %s", e.message)
            self.metrics.errors.labels(reason="malformed_label").inc()
            return
        if not label.counts_for_accuracy:
            return  # "can't tell" closes a review item; it is no evidence about the verdict
        verdict = self._latest(self.predictions, label.video_id)
        if verdict is None:
            self.waiting_labels[label.video_id] = label.label
            return
        self._count_label(label.video_id, verdict, label.label)

    def _remember_verdict(self, video_id: str, verdict: str) -> None:
        """Record the verdict for the label join; count a label that arrived first."""
        self.predictions[video_id] = verdict
        waiting = self._latest(self.waiting_labels, video_id)
        if waiting is not None:
            self._count_label(video_id, verdict, waiting)

    def _count_label(self, video_id: str, verdict: str, label: str) -> None:
        counted = self._latest(self.counted_labels, video_id)
        if counted == label:
            return  # the same label again (a redelivery, a repeated click, a repeated verdict)
        self.counted_labels[video_id] = label
        self.metrics.record_label_outcome(label_outcome(verdict, label))

    def _latest(self, table: Any, video_id: str) -> Any:
        """The newest value for ``video_id`` in a joined table, looking back label_join_days windows."""
        for age in range(self.settings.label_join_days + 1):
            try:
                value = table[video_id].delta(age * JOIN_WINDOW_SECONDS)
            except KeyError:
                continue
            if value is not None:
                return value
        return None

    def close(self) -> None:
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.model_pool.shutdown(wait=False, cancel_futures=True)


def ensure_topics(settings: WorkerSettings, timeout_seconds: float = 60.0) -> list[str]:
    """Create the four topics where missing, before the consumer subscribes.

    Faust ignores a source topic that does not exist when it joins the group
    and would not consume it until a later rebalance, so the worker creates
    them first.  Returns the names it created.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            admin = KafkaAdminClient(client_id=f"{settings.app_id}-admin", **settings.kafka_python_options())
            break
        except KafkaError as e:
            if time.monotonic() > deadline:
                raise
            logger.warning("Kafka not reachable yet (%s); retrying", e)
            time.sleep(1.0)
    created = []
    try:
        existing = set(admin.list_topics())
        for name in settings.topics.all():
            if name in existing:
                continue
            try:
                topic = NewTopic(
                    name,
                    settings.topic_partitions,
                    settings.topic_replication_factor,
                    topic_configs={"min.insync.replicas": str(settings.topic_min_insync_replicas)},
                )
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    if created:
        logger.info(
            "created topics %s with %d partitions, %d replicas, min.insync.replicas %d",
            created,
            settings.topic_partitions,
            settings.topic_replication_factor,
            settings.topic_min_insync_replicas,
        )
    return created


def run_worker(worker: MotionGuardWorker, log_level: str = "info") -> None:
    """Run until SIGTERM/SIGINT: the uploads consumer lets its events in flight finish and commits them first."""
    if worker.settings.create_topics:
        ensure_topics(worker.settings)
    faust_worker = faust.Worker(worker.app, loglevel=log_level.upper(), override_logging=False)
    try:
        faust_worker.execute_from_commandline()
    finally:
        worker.close()
