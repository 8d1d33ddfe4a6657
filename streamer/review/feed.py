"""The console's Kafka side: the verdicts and labels topics in, decisions out.

:class:`QueueFeed` reads both topics from their beginning (no consumer group,
no committed offsets: every console rebuilds the whole state) into a
:class:`~streamer.review.queue.ReviewQueue`, and is *caught up* once it has
read up to the end offsets the topics had when it started; the console
answers ``/ready`` and serves decisions only then, so nothing decided before
a restart can be offered again.  :class:`LabelPublisher` writes a decision to
the labels topic and waits for the broker's acknowledgement (``acks=all``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streamer.review.queue import ReviewQueue
from streamer.schemas import EventError, ModeratorLabel
from streamer.settings import WorkerSettings

logger = logging.getLogger(__name__)


def _record_time(timestamp_ms: int | None) -> datetime:
    if timestamp_ms is None or timestamp_ms < 0:
        return datetime.now(UTC)
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


class QueueFeed:
    def __init__(self, settings: WorkerSettings, queue: ReviewQueue) -> None:
        self.settings = settings
        self.queue = queue
        self.caught_up = asyncio.Event()
        self.records_read = 0
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        topics = (self.settings.topic_verdicts, self.settings.topic_labels)
        # Subscribed without a group: every partition of both topics is assigned to this consumer.
        self._consumer = AIOKafkaConsumer(
            *topics,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="motionguard-review",
            **self.settings.aiokafka_options(),
        )
        await self._consumer.start()
        partitions = await self._assigned(topics)
        ends = await self._consumer.end_offsets(list(partitions))
        self._task = asyncio.create_task(self._run({tp: end for tp, end in ends.items() if end > 0}))

    async def _assigned(self, topics: tuple[str, ...], timeout_seconds: float = 30.0) -> set[TopicPartition]:
        """The partitions of both topics, once assigned (the worker creates the topics: wait a little)."""
        assert self._consumer is not None
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while True:
            assigned = set(self._consumer.assignment())
            if {tp.topic for tp in assigned} >= set(topics):
                return assigned
            if asyncio.get_running_loop().time() > deadline:
                missing = set(topics) - {tp.topic for tp in assigned}
                raise RuntimeError(f"topics {sorted(missing)} do not exist; start the worker (it creates them) first")
            await asyncio.sleep(0.2)

    async def _run(self, ends: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        if not ends:
            self.caught_up.set()
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
            except KafkaError as e:
                logger.warning("reading the verdicts and labels topics failed (%s); retrying", e)
                await asyncio.sleep(1.0)
                continue
            for tp, messages in batches.items():
                for message in messages:
                    self._take(tp.topic, message.value, message.timestamp)
            if not self.caught_up.is_set():
                positions = {tp: await consumer.position(tp) for tp in ends}
                if all(positions[tp] >= end for tp, end in ends.items()):
                    logger.info("review queue caught up: %d records read", self.records_read)
                    self.caught_up.set()

    def _take(self, topic: str, value: bytes | None, timestamp_ms: int | None) -> None:
        self.records_read += 1
        when = _record_time(timestamp_ms)
        if topic == self.settings.topic_labels:
            try:
                label = ModeratorLabel.parse(value)
            except EventError as e:
                logger.warning("ignoring a malformed moderator label: %s", e.message)
                return
            self.queue.add_label(label, when)
            return
        try:
            record = json.loads(value) if value else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not isinstance(record, dict):
            logger.warning("ignoring a verdict that is not a JSON object")
            return
        self.queue.add_verdict(record, when)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


class LabelPublisher:
    def __init__(self, settings: WorkerSettings) -> None:
        self.topic = settings.topic_labels
        self._producer = AIOKafkaProducer(
            acks="all", enable_idempotence=True, client_id="motionguard-review", **settings.aiokafka_options()
        )

    async def start(self) -> None:
        await self._producer.start()

    async def publish(self, label: ModeratorLabel) -> None:
        await self._producer.send_and_wait(self.topic, key=label.video_id.encode(), value=label.to_json())

    async def stop(self) -> None:
        await self._producer.stop()
