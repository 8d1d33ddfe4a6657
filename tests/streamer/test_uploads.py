"""The uploads consumer in-process against the real broker, with a handler the test controls.

What is committed, how many events are in flight, and where a partition
starts that its group never committed (an upgrade from the Faust-consumed
uploads) are read back from Kafka itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry

from streamer.metrics import WorkerMetrics
from streamer.settings import WorkerSettings
from streamer.uploads import UploadsConsumer

pytestmark = [pytest.mark.kafka]


def new_uploads(bootstrap: str, events: int) -> WorkerSettings:
    """A one-partition uploads topic holding ``events`` events (values "0", "1", ...)."""
    prefix = f"t-uploads-{uuid.uuid4().hex[:8]}"
    settings = WorkerSettings(
        broker=f"kafka://{bootstrap}", app_id=prefix, topic_uploads=f"{prefix}-uploads", batch_max_events=3
    )
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="motionguard-tests")
    try:
        admin.create_topics([NewTopic(settings.topic_uploads, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for n in range(events):
            producer.send(settings.topic_uploads, key=b"k", value=str(n).encode(), partition=0)
        producer.flush(30)
    finally:
        producer.close()
    return settings


def committed(settings: WorkerSettings) -> int | None:
    """The uploads group's committed offset for partition 0, as Kafka has it (blocking)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=settings.uploads_group, enable_auto_commit=False
    )
    try:
        offset = consumer.committed(TopicPartition(settings.topic_uploads, 0))
    finally:
        consumer.close()
    return None if offset is None else int(offset)


async def committed_is(settings: WorkerSettings, offset: int) -> bool:
    return await asyncio.to_thread(committed, settings) == offset


async def until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_seconds: float = 60.0, what: str = "the condition"
) -> None:
    """:func:`motionguard_dev.harness.wait_for` for a condition checked on the event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        result = condition()
        if await result if isinstance(result, Awaitable) else result:
            return
        assert loop.time() < deadline, f"timed out after {timeout_seconds:.0f} s waiting for {what}"
        await asyncio.sleep(0.1)


def count_polls(uploads: UploadsConsumer) -> list[int]:
    """Count the uploads consumer's polls (its consumer's public ``getmany``, wrapped on this instance).

    Each poll is where the consumer decides whether to take more events, so two polls after
    a state prove that it had the chance to take an event it must not.
    """
    consumer = uploads.consumer
    getmany = consumer.getmany
    polls = [0]

    async def counted(*args: Any, **kwargs: Any) -> Any:
        polls[0] += 1
        return await getmany(*args, **kwargs)

    consumer.getmany = counted
    return polls


class Handler:
    """Records each event it is given; an event listed in ``hold`` waits until released."""

    def __init__(self, hold: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.hold = set(hold)
        self.started: list[int] = []
        self.finished: list[int] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()

    async def __call__(self, key: bytes | None, value: bytes | None) -> None:
        number = int(value or b"-1")
        self.started.append(number)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if number in self.hold:
                await self.release.wait()
            else:
                await asyncio.sleep(0.01)
            self.finished.append(number)
        finally:
            self.running -= 1


async def run_consumer(settings: WorkerSettings, handler: Handler, scenario: Callable[[UploadsConsumer], Any]) -> None:
    uploads = UploadsConsumer(settings, handler, WorkerMetrics(CollectorRegistry(), 10))
    await uploads.start()
    running = asyncio.get_running_loop().create_task(uploads.run())
    try:
        await scenario(uploads)
    finally:
        handler.release.set()
        await uploads.stop()
        await asyncio.wait_for(running, 10)  # run() returns once stopped


def test_only_the_finished_prefix_is_committed_and_in_flight_stays_bounded(kafka_broker: Any) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = new_uploads(bootstrap, 20)
    handler = Handler(hold={4})

    async def scenario(uploads: UploadsConsumer) -> None:
        polls = count_polls(uploads)
        # 4 is held: 5 and 6 finish behind it, and then the 3 in flight (4, 5, 6) fill the window.
        await until(lambda: handler.finished[-2:] == [5, 6] and uploads.in_flight() == 3, what="a full window")
        await until(lambda: committed_is(settings, 4), what="the commit of 4")
        seen = polls[0]
        await until(lambda: polls[0] >= seen + 2, what="two polls with the window full")
        assert handler.started == [0, 1, 2, 3, 4, 5, 6], "no event taken beyond the window"
        assert await asyncio.to_thread(committed, settings) == 4
        assert uploads.assigned
        handler.release.set()
        await until(lambda: len(handler.finished) == 20)
        await until(lambda: committed_is(settings, 20))

    asyncio.run(run_consumer(settings, handler, scenario))
    assert handler.started == list(range(20)), "each event once, in order"
    assert handler.most_running <= settings.batch_max_events


def test_stopping_commits_what_finished_and_a_restart_resumes_there(kafka_broker: Any) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    settings = new_uploads(bootstrap, 6)
    first = Handler(hold={2})

    async def until_held(uploads: UploadsConsumer) -> None:
        await until(lambda: 2 in first.started and first.finished[:2] == [0, 1])

    # Stopping releases 2 (the handler finishes when released): it is drained, then committed.
    asyncio.run(run_consumer(settings, first, until_held))
    done = committed(settings)
    assert done is not None and done >= 3, done
    second = Handler()

    async def until_all(uploads: UploadsConsumer) -> None:
        await until(lambda: committed_is(settings, 6))

    asyncio.run(run_consumer(settings, second, until_all))
    assert sorted(first.finished + second.finished) == list(range(6)), "nothing twice after a clean stop"


def test_a_partition_never_committed_starts_where_the_faust_apps_group_left_it(kafka_broker: Any) -> None:
    """An upgrade: earlier workers consumed uploads in group ``app_id`` and committed offset 5 there."""
    bootstrap = kafka_broker.bootstrap_servers
    settings = new_uploads(bootstrap, 8)
    legacy = KafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.app_id, enable_auto_commit=False)
    try:
        tp = TopicPartition(settings.topic_uploads, 0)
        legacy.assign([tp])
        legacy.commit({tp: OffsetAndMetadata(5, "", -1)})
    finally:
        legacy.close()
    handler = Handler()

    async def scenario(uploads: UploadsConsumer) -> None:
        await until(lambda: committed_is(settings, 8))

    asyncio.run(run_consumer(settings, handler, scenario))
    assert handler.started == [5, 6, 7]


def test_a_rebalance_commits_what_finished_before_the_partition_moves(kafka_broker: Any) -> None:
    """A second consumer joins while the first holds an event: the first waits for it and commits first."""
    bootstrap = kafka_broker.bootstrap_servers
    settings = new_uploads(bootstrap, 12)
    first, second = Handler(hold={4}), Handler()

    async def scenario() -> None:
        metrics = WorkerMetrics(CollectorRegistry(), 10)
        consumers = [UploadsConsumer(settings, handler, metrics) for handler in (first, second)]
        await consumers[0].start()
        runs = [asyncio.get_running_loop().create_task(consumers[0].run())]
        try:
            await until(lambda: 4 in first.started and first.finished[-2:] == [5, 6])

            async def join() -> None:  # start() returns once the rebalance is over
                await consumers[1].start()
                await consumers[1].run()

            # The group rebalances: the first stops taking events and waits for 4.
            runs.append(asyncio.get_running_loop().create_task(join()))
            # The first is in its revoke handler, holding the partition while it waits for 4.
            await until(lambda: bool(consumers[0].revoking), what="the first consumer's revoke")
            first.release.set()  # 4 finishes within the revoke wait
            await until(lambda: committed_is(settings, 12))
        finally:
            first.release.set()
            for consumer in consumers:
                await consumer.stop()
            await asyncio.wait_for(asyncio.gather(*runs), 10)

    asyncio.run(scenario())
    handled = sorted(first.finished + second.finished)
    assert handled == list(range(12)), "each event once: the revoke committed 7 before the partition moved"
    assert first.finished[:7] == [0, 1, 2, 3, 5, 6, 4], "4 finished during the revoke wait"
