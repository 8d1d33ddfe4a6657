"""The producer of the worker's outcomes (verdicts and dead letters): ``acks=all`` and idempotent.

Faust's own producer enables idempotence only with ``processing_guarantee="exactly_once"``
(which also makes every consumer read committed transactions), so the outcomes go through an
aiokafka producer of their own: a record the producer retries after a broker failure is
written once, and an acknowledged one is on ``min.insync.replicas`` brokers.  It is started
before the uploads consumer and stopped after it (:class:`streamer.uploads.UploadsService`), so
events in flight at a stop still deliver their outcomes.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer

from streamer.settings import WorkerSettings

logger = logging.getLogger(__name__)


class OutcomeProducer:
    """``send(topic, key, value)`` returns once Kafka has acknowledged the record (``acks=all``)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            client_id=f"{self.settings.app_id}-outcomes",
            acks="all",
            enable_idempotence=True,
            **self.settings.aiokafka_options(),
        )
        await self.producer.start()
        logger.info("outcome producer started (acks=all, idempotent)")

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        if self.producer is None:
            raise RuntimeError("the outcome producer is not started")
        await self.producer.send_and_wait(topic, value=value, key=key)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
