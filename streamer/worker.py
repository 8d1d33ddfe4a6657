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
  meet in one :class:`~streamer.batcher.ModelBatcher`, which runs one model
  call per batch of up to ``batch_max_events`` videos or ``batch_window_ms``
  milliseconds.
* Decoding and inference run in thread pools, never on the event loop, so
  heartbeats and the web endpoints stay responsive.
* Moderator labels (``moderator-labels``) are joined with the verdicts
  (``video-verdicts``, read back by a Faust agent) by ``video_id`` in Faust
  tables co-partitioned with those two topics, and counted into the accuracy
  metrics.

The modules follow that flow: :mod:`streamer.uploads` and :mod:`streamer.offsets` (taking
events and committing the finished prefix), :mod:`streamer.scoring` (one event to its
verdict and dead letter on Kafka, and whether deliveries are stalling),
:mod:`streamer.batcher` (the shared model batches), :mod:`streamer.label_join` (the
moderator-label join) and :mod:`streamer.kafka_topics` (creating missing topics at start).
This module wires them into the Faust app: the topics, the join agents, the uploads
service, the readiness timer and the ``/metrics``, ``/healthz`` and ``/ready`` pages.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from detectors.pipeline import Detector
from streamer.batcher import ModelBatcher
from streamer.kafka_topics import ensure_topics
from streamer.label_join import LabelJoin
from streamer.metrics import WorkerMetrics
from streamer.outcomes import OutcomeProducer
from streamer.scoring import UploadScorer
from streamer.settings import WorkerSettings
from streamer.sources import SourcePolicy
from streamer.uploads import UploadsConsumer, UploadsService

logger = logging.getLogger(__name__)


class MotionGuardWorker:
    """Owns the Faust app, the detector, the thread pools and the metrics; wires the scorer and the label join."""

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
        self.sources = SourcePolicy.from_settings(settings)
        self.decode_pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.batcher = ModelBatcher(
            embed_many=detector.embed_many,
            executor=self.model_pool,
            metrics=self.metrics,
            max_videos=settings.batch_max_events,
            window_seconds=settings.batch_window_ms / 1000.0,
        )
        model = detector.model
        self.metrics.model_info.labels(
            name=model.name,
            version=model.version,
            classifier=model.classifier,
            untrained=str(model.untrained).lower(),
        ).set(1)
        self.outcomes = OutcomeProducer(settings)
        self.app = self._create_app()
        self.scorer = UploadScorer(
            settings=settings,
            detector=detector,
            metrics=self.metrics,
            sources=self.sources,
            decode_pool=self.decode_pool,
            batcher=self.batcher,
            outcomes=self.outcomes,
        )
        self.uploads = UploadsConsumer(settings, self.scorer.handle_upload, self.metrics)

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
        self.label_join = LabelJoin(app, s, self.metrics)

        async def join_verdicts(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                self.label_join.handle_verdict(event.key, event.value)

        async def join_labels(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                self.label_join.handle_label(event.key, event.value)

        app.agent(verdicts, name="join-verdicts")(join_verdicts)
        app.agent(labels, name="join-labels")(join_labels)

        async def consume_uploads() -> None:
            # A runtime dependency starts once the app (the tables, the agents) is up and stops
            # before it; it stops the uploads consumer (events in flight finish) before the
            # outcome producer their verdicts go through.
            await app.add_runtime_dependency(UploadsService(self.uploads, self.outcomes))

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
            assigned, delivering = self.uploads.assigned, self.scorer.delivering()
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

    async def _update_ready(self) -> None:
        self.metrics.ready.set(1 if self.uploads.assigned and self.scorer.delivering() else 0)

    def close(self) -> None:
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.model_pool.shutdown(wait=False, cancel_futures=True)


def run_worker(worker: MotionGuardWorker, log_level: str = "info") -> None:
    """Run until SIGTERM/SIGINT: the uploads consumer lets its events in flight finish and commits them first."""
    if worker.settings.create_topics:
        ensure_topics(worker.settings)
    faust_worker = faust.Worker(worker.app, loglevel=log_level.upper(), override_logging=False)
    try:
        faust_worker.execute_from_commandline()
    finally:
        worker.close()
