"""The uploads consumer: aiokafka's public consumer API, run as a service of the worker's Faust app.

Why not a Faust agent: faust-streaming 0.15.3 commits past events that have
no outcome yet (it commits the run of acknowledged offsets starting at the
lowest one, unchecked before a partition's first commit and off by one after
it) and drops fetched events around start-up, rebalances and flow control
(records it counts as read although no actor got them).  Keeping the
at-least-once guarantee on top of that took overriding its private consumer
internals.  A plain Kafka consumer does neither, so the worker consumes the
uploads topic itself and Faust keeps the rest (web server, timers, the
label-join tables and agents).

* Consumer group ``<app_id>-uploads`` (:attr:`WorkerSettings.uploads_group`),
  automatic commits off.  A partition that group never committed starts at the
  offset the Faust app's group (``<app_id>``, which consumed uploads before)
  committed for it, if any, else at the start of the log.
* At most ``batch_max_events`` events are in flight: taken from Kafka and not
  yet covered by a commit.  When that many are, the partitions are paused
  (the consumer keeps polling, so it stays in the group) and resumed when a
  commit makes room.  A SIGKILL makes the next owner process at most those
  again.
* An offset is committed when every event before it has its outcome on Kafka
  (:class:`streamer.offsets.UploadOffsets`), as soon as it has.
* On a rebalance the consumer stops taking events, waits up to
  ``REVOKE_WAIT_SECONDS`` for those in flight, and commits what is finished
  before the partitions move; on SIGTERM it waits up to ``DRAIN_SECONDS``.
  Events still running then may be answered twice, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, KafkaError
from faust import Service

from streamer.metrics import WorkerMetrics
from streamer.offsets import UploadOffsets
from streamer.outcomes import OutcomeProducer
from streamer.settings import WorkerSettings

logger = logging.getLogger(__name__)

Handler = Callable[[bytes | None, bytes | None], Awaitable[None]]

#: How long a rebalance waits for the events in flight before the partitions move.
REVOKE_WAIT_SECONDS = 10.0
#: How long SIGTERM waits for the events in flight (the chart's grace period is 60 s).
DRAIN_SECONDS = 30.0
#: How long one commit may take (aiokafka retries a retriable error till then).
COMMIT_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.5
LAG_INTERVAL_SECONDS = 5.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, uploads: UploadsConsumer) -> None:
        self.uploads = uploads

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.uploads.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.uploads.on_assigned(set(assigned))


class UploadsConsumer:
    """Consumes the uploads topic, calls ``handle`` for each event, commits the finished prefix.

    ``handle(key, value)`` must bring the event to its outcome on Kafka and
    return only then; it may raise only when cancelled.  :meth:`start`, then
    :meth:`run` until :meth:`stop` (:class:`UploadsService` does that with
    the Faust app).
    """

    def __init__(self, settings: WorkerSettings, handle: Handler, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.handle = handle
        self.metrics = metrics
        self.max_in_flight = settings.batch_max_events
        self.offsets = UploadOffsets()
        self.consumer: Any = None  # an AIOKafkaConsumer once started
        self.assigned = False
        self.revoking: set[TopicPartition] = set()
        self.starting: set[TopicPartition] = set()  # assigned, start offset not settled yet
        self.running: set[asyncio.Task[None]] = set()
        self.progress = asyncio.Event()  # an event finished or a commit succeeded
        self.commit_lock = asyncio.Lock()
        self.lag_partitions: set[str] = set()
        self.stopping = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Join the uploads group (events are taken by :meth:`run`)."""
        s = self.settings
        self.consumer = AIOKafkaConsumer(
            **s.aiokafka_options(),
            group_id=s.uploads_group,
            client_id=f"{s.app_id}-uploads",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_in_flight,
            # A rebalance waits for the revoke handler (REVOKE_WAIT_SECONDS plus a commit).
            rebalance_timeout_ms=int((REVOKE_WAIT_SECONDS + 2 * COMMIT_TIMEOUT_SECONDS) * 1000),
        )
        self.consumer.subscribe([s.topic_uploads], listener=_Rebalance(self))
        await self.consumer.start()

    async def run(self) -> None:
        """Take events, commit and report the lag until :meth:`stop`; a programming error raises."""
        await asyncio.gather(self._take_events(), self._commit_finished(), self._report_lag())

    async def stop(self) -> None:
        """Stop taking events, let those in flight finish (up to DRAIN_SECONDS), commit, leave the group."""
        self.stopping = True
        self.progress.set()  # wakes the loops of run()
        consumer = self.consumer
        if consumer is None:
            return
        await self._wait_for(lambda: not self.running, DRAIN_SECONDS)
        if self.running:
            logger.warning("stopping with %d events unfinished: the next worker processes them", len(self.running))
            for task in self.running:
                task.cancel()
            await asyncio.gather(*self.running, return_exceptions=True)
        await self._commit()
        self._set_assigned(False)
        await consumer.stop()

    # -- taking events -----------------------------------------------------------------

    def in_flight(self) -> int:
        """Events taken and not yet committed, plus any still running for a partition that moved."""
        return max(self.offsets.in_flight(), len(self.running))

    async def _take_events(self) -> None:
        consumer = self.consumer
        while not self.stopping:
            try:
                room = self.max_in_flight - self.in_flight()
                if room <= 0:
                    # Full: keep polling (a consumer that stops polling leaves the group), take nothing.
                    consumer.pause(*consumer.assignment())
                    await self._wait_for(lambda: self.in_flight() < self.max_in_flight, POLL_SECONDS)
                    batch = await consumer.getmany(timeout_ms=0)
                else:
                    consumer.resume(*(consumer.paused() - self.starting))
                    batch = await consumer.getmany(timeout_ms=int(POLL_SECONDS * 1000), max_records=room)
            except ConsumerStoppedError:
                return
            except KafkaError as e:  # e.g. a fetch error the consumer reports once; it keeps fetching
                logger.warning("uploads consumer: %s; polling again", e)
                await asyncio.sleep(POLL_SECONDS)
                continue
            if self.stopping:
                return
            self._take(batch)

    def _take(self, batch: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in batch.items():
            if tp in self.revoking:
                continue  # moving to another consumer, which reads from the last commit
            if tp in self.starting:
                self.consumer.seek(tp, records[0].offset)  # taken once it is known where tp starts
                continue
            for record in records:
                if self.in_flight() >= self.max_in_flight:
                    # Not taken: the next poll returns it again (from this offset on).
                    self.consumer.seek(tp, record.offset)
                    break
                if not self.offsets.take(tp, record.offset):
                    continue  # fetched again after a reset of the position: taken before
                task = asyncio.get_running_loop().create_task(
                    self._process(tp, record.offset, record.key, record.value),
                    name=f"upload-{tp.partition}-{record.offset}",
                )
                self.running.add(task)
                task.add_done_callback(self.running.discard)

    async def _process(self, tp: TopicPartition, offset: int, key: bytes | None, value: bytes | None) -> None:
        try:
            await self.handle(key, value)
            self.offsets.finish(tp, offset)
        finally:
            self.progress.set()

    # -- committing ------------------------------------------------------------------------

    async def _commit_finished(self) -> None:
        """Commit as soon as a partition's finished prefix moves."""
        delay = POLL_SECONDS
        while not self.stopping:
            await self._wait_for(lambda: bool(self.offsets.commits()), POLL_SECONDS)
            if self.stopping or not self.offsets.commits():
                continue
            if await self._commit():
                delay = POLL_SECONDS
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _commit(self) -> bool:
        """Commit every finished prefix not committed yet; ``False`` if the commit failed.

        aiokafka retries a commit while the broker is away; the timeout keeps
        the lock free for the commit of a rebalance or a stop.
        """
        async with self.commit_lock:
            consumer = self.consumer
            assigned = consumer.assignment()
            offsets = {tp: offset for tp, offset in self.offsets.commits().items() if tp in assigned}
            if not offsets:
                return True
            try:
                await asyncio.wait_for(consumer.commit(offsets), COMMIT_TIMEOUT_SECONDS)
            except CommitFailedError as e:  # a rebalance: the revoke handler commits what is finished
                logger.info("uploads commit deferred to the rebalance: %s", e)
                return False
            except (KafkaError, TimeoutError) as e:
                logger.warning("cannot commit uploads offsets (%s); trying again", e or type(e).__name__)
                return False
            for tp, offset in offsets.items():
                self.offsets.committed(tp, offset)
            self.progress.set()
            return True

    # -- rebalances --------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop taking events of ``revoked``, wait briefly for those in flight, commit what is finished."""
        self._set_assigned(False)
        if not revoked:
            return
        self.revoking |= revoked
        try:
            await self._wait_for(lambda: self.offsets.unfinished(revoked) == 0, REVOKE_WAIT_SECONDS)
            unfinished = self.offsets.unfinished(revoked)
            if unfinished:
                logger.info("rebalance: %d events still running; the next owner processes them again", unfinished)
            await self._commit()
        finally:
            for tp in revoked:
                self.offsets.revoke(tp)
            self.revoking -= revoked

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            # Nothing is fetched for them until it is known where they start (aiokafka begins
            # fetching at the group's commit, or the log start, while this runs).
            self.consumer.pause(*assigned)
            self.starting |= assigned
            try:
                await self._take_over_legacy_offsets(assigned)
            finally:
                self.starting -= assigned
            if self.in_flight() < self.max_in_flight:
                self.consumer.resume(*assigned)
        logger.info("uploads partitions assigned: %s", sorted(tp.partition for tp in assigned))
        self._set_assigned(True)

    async def _take_over_legacy_offsets(self, assigned: set[TopicPartition]) -> None:
        """Start a partition this group never committed where the Faust app's group left it.

        Workers before this one consumed uploads in the Faust app's group
        (``app_id``).  Its commit is copied into this group once, so an
        upgrade neither reprocesses the topic from its start nor skips
        anything.  If that group cannot be asked, the partition starts at the
        start of the log (at-least-once: duplicates, no loss).
        """
        consumer = self.consumer
        ordered = sorted(assigned)
        commits = await asyncio.gather(*(consumer.committed(tp) for tp in ordered))
        fresh = [tp for tp, committed in zip(ordered, commits, strict=True) if committed is None]
        if not fresh:
            return
        admin = AIOKafkaAdminClient(**self.settings.aiokafka_options(), client_id=f"{self.settings.app_id}-uploads")
        try:
            await admin.start()
            legacy = await admin.list_consumer_group_offsets(self.settings.app_id, partitions=fresh)
        except KafkaError as e:
            group = self.settings.app_id
            logger.warning("cannot read group %s's uploads offsets (%s); starting at the log start", group, e)
            return
        finally:
            await admin.close()
        takeover = {tp: meta.offset for tp, meta in legacy.items() if tp in fresh and meta.offset >= 0}
        if not takeover:
            return
        for tp, offset in takeover.items():
            consumer.seek(tp, offset)
        try:
            await asyncio.wait_for(consumer.commit(takeover), COMMIT_TIMEOUT_SECONDS)
        except (KafkaError, TimeoutError) as e:
            logger.warning("cannot record the offsets taken over from group %s: %s", self.settings.app_id, e)
        logger.info(
            "uploads partitions %s start where group %s left them: %s",
            sorted(tp.partition for tp in takeover), self.settings.app_id, sorted(takeover.values()),
        )  # fmt: skip

    def _set_assigned(self, assigned: bool) -> None:
        self.assigned = assigned
        self.metrics.ready.set(1 if assigned else 0)

    # -- lag --------------------------------------------------------------------------------

    async def _report_lag(self) -> None:
        while not self.stopping:
            await self._wait_for(lambda: self.stopping, LAG_INTERVAL_SECONDS)
            if not self.stopping:
                await self._update_lag()

    async def _update_lag(self) -> None:
        """``motionguard_consumer_lag_messages``: per assigned partition, log end minus what a restart would read."""
        consumer = self.consumer
        partitions = set(consumer.assignment())
        current: set[str] = set()
        if partitions:
            try:
                ends = await consumer.end_offsets(list(partitions))
                for tp in partitions:
                    start = self.offsets.frontier(tp)
                    if start is None:
                        start = await consumer.position(tp)
                    self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(max(0, ends[tp] - start))
                    current.add(str(tp.partition))
            except (KafkaError, KeyError) as e:  # KeyError: revoked while asking
                logger.debug("consumer lag not updated: %s", e)
                return
        for partition in self.lag_partitions - current:  # revoked: another worker reports it now
            self.metrics.consumer_lag.remove(partition)
        self.lag_partitions = current

    # -- helpers ------------------------------------------------------------------------------

    async def _wait_for(self, condition: Callable[[], bool], timeout_seconds: float) -> None:
        """Wait until ``condition()`` holds (checked at each progress) or ``timeout_seconds`` pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self.progress.clear()
            if condition():
                return
            try:
                await asyncio.wait_for(self.progress.wait(), remaining)
            except TimeoutError:
                return


class UploadsService(Service):
    """Runs an :class:`UploadsConsumer` as a service of the Faust app (mode's public hooks only).

    Added to the running app as a runtime dependency.  It starts the outcome
    producer (:mod:`streamer.outcomes`) before the consumer and stops it after,
    so events in flight at a stop still deliver their verdicts.
    """

    def __init__(self, uploads: UploadsConsumer, outcomes: OutcomeProducer, **kwargs: Any) -> None:
        self.uploads = uploads
        self.outcomes = outcomes
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.outcomes.start()
        await self.uploads.start()

    async def on_started(self) -> None:
        self.add_future(self.uploads.run())  # an exception in it crashes the app, as an agent's would

    async def on_stop(self) -> None:
        try:
            await self.uploads.stop()
        finally:
            await self.outcomes.stop()
