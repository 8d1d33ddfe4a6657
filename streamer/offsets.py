"""What the uploads topic may commit, decided by MotionGuard rather than by Faust.

An uploads offset may be committed only when every event before it has its
outcome (verdict or error verdict plus dead letter) on Kafka; otherwise a
crash loses the events in between.  faust-streaming 0.15.3 cannot promise that
on its own:

* it commits the run of consecutive acknowledged offsets that starts at the
  *lowest* acknowledged one, checking nothing before a partition's first
  commit and off by one after it, so events still in flight, or never handed
  to an actor at all, can be committed past;
* it can drop events it has fetched without handing them to any actor: those
  it skips around a rebalance or while flow control is stopped, and the rest
  of a fetched batch when the flow stops in the middle of it.  It counts a
  jump in fetched offsets as a *gap* (offsets it believes hold no record) and
  commits across it; and after a seek back it drops the records it believes
  it has read already, even those it never delivered;
* after a rebalance it seeks each partition back to its committed offset, but
  only when that offset is above 0, so a partition that was never committed
  keeps reading *after* the events it dropped.

So the worker replaces that decision for the uploads topic (the moderator
labels and the tables keep Faust's rules):

* :class:`UploadOffsets` records which offsets were handed to an actor and
  which have their outcome, and gives the commit *frontier*: the first offset
  of a partition without an outcome.  Nothing past it is committed.
* :class:`UploadsConsumer` is Faust's aiokafka consumer with its commit rule
  for the uploads topic replaced by the frontier, never-committed uploads
  partitions sought back to the start of the log after Faust's seek, and
  every uploads record fetched after a seek delivered (Faust would drop the
  ones it believes it has read already, see :class:`_ReadOffsets`).
* When a partition's frontier event was fetched but is in nobody's hands for
  a while, :meth:`UploadOffsets.stalled` says so.  Evidence that it was
  dropped rather than still queued comes only from events fetched since the
  partition's last seek: after a seek back, Faust still delivers the events
  it had queued before it, and the frontier's new copy waits behind them.
  Those stale copies, like events already answered, are not processed again
  (:meth:`UploadOffsets.superseded`).  The worker then asks the
  broker which of the fetched offsets from there on hold a record
  (:func:`scan_offsets`): offsets without one (transaction markers, compacted
  or deleted records) are stepped over, and if the frontier holds an event
  (Faust dropped it) the partition is fetched again from there.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

logger = logging.getLogger(__name__)

Partition = Hashable  # a Faust TP or an aiokafka TopicPartition: equal when topic and partition are


@dataclass
class _PartitionOffsets:
    log_start: int | None = None
    in_flight: Counter[int] = field(default_factory=Counter)  # offset -> actors holding it (a re-read: 2)
    done: set[int] = field(default_factory=set)
    absent: dict[int, int] = field(default_factory=dict)  # start -> stop of ranges that hold no record
    highest_handed: int = -1  # among events fetched since the last seek
    seeks: int = 0  # how often the fetch position was moved: the current fetch epoch
    sought_to: int | None = None  # where the last seek moved it (None: not known)
    answered_below: int = 0  # every offset below has its outcome (the last commit handed out)
    stall: tuple[int, float, int] | None = None  # (frontier, since, re-reads of that frontier)


class UploadOffsets:
    """Per uploads partition: which offsets have their outcome, and how far a commit may go.

    ``committed`` arguments are Faust's committed offset for the partition in
    Kafka's meaning (the next offset to process), ``None`` when nothing was
    committed (Faust also reports a committed 0 as ``None``).  Until the
    partition's log start is known (:meth:`set_log_start`), a never-committed
    partition commits nothing.

    ``stall_seconds`` is how long a frontier event may be missing before
    :meth:`stalled` reports it; each further report for the same frontier waits
    twice as long (up to 16 times), so a re-read that keeps failing does not
    re-process the partition every few seconds.
    """

    def __init__(self, stall_seconds: float = 15.0) -> None:
        self.stall_seconds = stall_seconds
        self._partitions: dict[Partition, _PartitionOffsets] = {}
        self._fetch_epochs: WeakKeyDictionary[Any, int] = WeakKeyDictionary()

    def _state(self, tp: Partition) -> _PartitionOffsets:
        return self._partitions.setdefault(tp, _PartitionOffsets())

    def set_log_start(self, tp: Partition, offset: int) -> None:
        """The partition's first offset: where a never-committed partition starts reading."""
        self._state(tp).log_start = offset

    def sought(self, tp: Partition, offset: int | None) -> int:
        """The partition's fetch position is about to be moved to ``offset`` (``None``: not known yet).

        Call it *before* the seek: events fetched until now are stale, no
        evidence for :meth:`stalled`, and those at ``offset`` or later are
        fetched again (:meth:`superseded`).  (An event fetched before the seek
        but stamped after this call only counts as fresh: at worst it is
        processed twice.)  Returns the new fetch epoch.
        """
        state = self._state(tp)
        state.seeks += 1
        state.sought_to = offset
        state.highest_handed = -1
        return state.seeks

    def seek_target(self, tp: Partition, epoch: int, offset: int | None) -> None:
        """Where the seek announced by :meth:`sought` (which returned ``epoch``) moved the position."""
        state = self._state(tp)
        if state.seeks == epoch:  # not sought again since
            state.sought_to = offset

    def superseded(self, tp: Partition, offset: int, fetch_epoch: int | None) -> bool:
        """Whether this copy of the event at ``offset`` needs no processing.

        True when the event already has its outcome on Kafka, or when this copy
        was fetched before the partition's last seek and that seek fetches it
        again: the other copy is processed instead.
        """
        state = self._state(tp)
        if offset in state.done or offset < state.answered_below:
            return True
        stale = fetch_epoch is not None and fetch_epoch != state.seeks
        return stale and state.sought_to is not None and offset >= state.sought_to

    def current_epoch(self, tp: Partition) -> int:
        """The partition's fetch epoch: how often its fetch position was moved so far."""
        return self._state(tp).seeks

    def fetched(self, message: Any, epoch: int) -> None:
        """``message`` (weakly referenced) was fetched in fetch epoch ``epoch`` of its partition."""
        self._fetch_epochs[message] = epoch

    def fetch_epoch(self, message: Any) -> int | None:
        """The fetch epoch :meth:`fetched` recorded for ``message``, ``None`` if none was."""
        return self._fetch_epochs.get(message)

    def handed(self, tp: Partition, offset: int, fetch_epoch: int | None = None) -> None:
        """An actor took the event at ``offset``, fetched in ``fetch_epoch`` (``None``: the current one)."""
        state = self._state(tp)
        state.in_flight[offset] += 1
        if fetch_epoch is None or fetch_epoch == state.seeks:
            state.highest_handed = max(state.highest_handed, offset)

    def done(self, tp: Partition, offset: int) -> None:
        """The event at ``offset`` has its outcome on Kafka."""
        state = self._state(tp)
        state.in_flight[offset] -= 1
        if state.in_flight[offset] <= 0:
            del state.in_flight[offset]
        state.done.add(offset)

    def mark_absent(self, tp: Partition, start: int, stop: int) -> None:
        """Offsets ``start`` to ``stop - 1`` hold no record: commits may step over them."""
        if stop > start:
            absent = self._state(tp).absent
            absent[start] = max(stop, absent.get(start, stop))

    def mark_scanned(self, tp: Partition, start: int, reached: int, present: set[int]) -> int:
        """A broker scan saw ``present`` among ``start`` to ``reached - 1``: the rest hold no record.

        Returns how many offsets were marked absent.
        """
        marked = 0
        unseen_from = start
        for seen in [*sorted(o for o in present if start <= o < reached), reached]:
            if seen > unseen_from:
                self.mark_absent(tp, unseen_from, seen)
                marked += seen - unseen_from
            unseen_from = seen + 1
        return marked

    def in_flight(self) -> int:
        """Events handed to actors and still without an outcome, over all partitions."""
        return sum(sum(state.in_flight.values()) for state in self._partitions.values())

    def _base(self, state: _PartitionOffsets, committed: int | None) -> int | None:
        if state.log_start is None:
            return committed or None
        return max(committed or 0, state.log_start)

    def frontier(self, tp: Partition, committed: int | None) -> int | None:
        """The first offset without an outcome (``None`` while the start is unknown)."""
        state = self._state(tp)
        offset = self._base(state, committed)
        if offset is None:
            return None
        offset = max([offset, *(stop for start, stop in state.absent.items() if start <= offset < stop)])
        while True:
            if offset in state.done:
                offset += 1
            elif offset in state.absent:
                offset = state.absent[offset]
            else:
                return offset

    def next_commit(self, tp: Partition, committed: int | None) -> int | None:
        """The offset to commit now, or ``None`` when the frontier has not moved."""
        state = self._state(tp)
        base = self._base(state, committed)
        offset = self.frontier(tp, committed)
        if base is None or offset is None or offset <= base:
            return None
        state.done = {o for o in state.done if o >= offset}
        state.absent = {start: stop for start, stop in state.absent.items() if stop > offset}
        state.answered_below = max(state.answered_below, offset)
        return offset

    def stalled(self, tp: Partition, committed: int | None, position: int | None, idle: bool, now: float) -> int | None:
        """The frontier offset when its event was fetched but has been in nobody's hands too long.

        The event at the frontier was fetched when the fetch ``position`` is
        past it.  It was dropped rather than still queued when it is not in
        flight and either the worker is ``idle`` (an idle worker's queue is
        empty) or a later offset of the partition, fetched since its last
        seek, was already handed (a partition's events reach the actors in
        offset order; events queued before a seek back still reach them
        first, ahead of the frontier's new copy).  Returns the
        offset once that has lasted ``stall_seconds`` (longer after each
        report for the same offset), else ``None``.
        """
        state = self._state(tp)
        offset = self.frontier(tp, committed)
        if offset is None or position is None or position <= offset or offset in state.in_flight:
            suspect = False
        else:
            suspect = idle or state.highest_handed > offset
        if not suspect or offset is None:
            if state.stall is not None:  # the same frontier keeps its re-read count; the wait starts again
                state.stall = (offset, now, state.stall[2]) if state.stall[0] == offset else None
            return None
        if state.stall is None or state.stall[0] != offset:
            state.stall = (offset, now, 0)
            return None
        _, since, rereads = state.stall
        if now - since < self.stall_seconds * 2 ** min(rereads, 4):
            return None
        state.stall = (offset, now, rereads + 1)
        return offset


class _ReadOffsets(defaultdict[Any, int | None]):
    """Faust's last-read offset per partition, never consulted for the uploads topic.

    Faust drops a fetched record whose offset is below the partition's last
    read one, to avoid delivering it twice.  But it also advances that offset
    for records it then fails to deliver (a callback cancelled when the flow
    stops), and around start-up it goes on draining a batch fetched before
    its own seek to the committed offset: the same events, fetched again after
    the seek, were then dropped as already read, and nothing delivered them.
    For the uploads topic every fetched record is delivered, as a plain Kafka
    consumer does after a seek; a duplicate costs a second, identical verdict,
    and what is committed does not depend on it (:class:`UploadOffsets`).
    """

    def __init__(self, consumer: UploadsConsumer) -> None:
        super().__init__(lambda: None)
        self._consumer = consumer

    def __getitem__(self, tp: Any) -> int | None:
        if tp.topic == self._consumer.uploads_topic:
            return None
        return super().__getitem__(tp)


class UploadsConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, with the uploads topic's commits decided by :class:`UploadOffsets`.

    The worker sets :attr:`uploads_topic` and :attr:`upload_offsets` right
    after Faust creates the consumer, before it starts.
    """

    uploads_topic: str = ""
    upload_offsets: UploadOffsets

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _ReadOffsets(self)
        self._batch_epochs: dict[Any, int] = {}

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await super()._wait_next_records(timeout)
        # Faust turns a fetched batch into messages one by one, while it
        # delivers them; a seek in between must not make the rest look new.
        offsets = self.upload_offsets
        self._batch_epochs = {tp: offsets.current_epoch(tp) for tp in records or () if tp.topic == self.uploads_topic}
        return records, active

    def _to_message(self, tp: Any, record: Any) -> Any:
        message = super()._to_message(tp, record)
        epoch = self._batch_epochs.get(tp)
        if epoch is not None:
            self.upload_offsets.fetched(message, epoch)
        return message

    async def seek(self, partition: Any, offset: int) -> None:
        if partition.topic == self.uploads_topic:
            self.upload_offsets.sought(partition, offset)
        await super().seek(partition, offset)

    def _new_offset(self, tp: Any) -> int | None:
        if tp.topic != self.uploads_topic:
            return super()._new_offset(tp)
        # Faust's own record of acknowledged offsets is not used for this topic.
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        return self.upload_offsets.next_commit(tp, self._committed_offset[tp])

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        # A jump in the offsets Faust fetched is no proof that the offsets in
        # between hold no event (Faust itself drops events); for the uploads
        # topic only the broker's answer counts (scan_offsets).
        if tp.topic != self.uploads_topic:
            await super()._add_gap(tp, offset_from, offset_to)

    async def perform_seek(self) -> None:
        uploads = [tp for tp in self.assignment() if tp.topic == self.uploads_topic]
        # Faust seeks those with a commit above 0 to it; where is known only afterwards.
        epochs = {tp: self.upload_offsets.sought(tp, None) for tp in uploads}
        await super().perform_seek()
        for tp, epoch in epochs.items():
            self.upload_offsets.seek_target(tp, epoch, self._committed_offset.get(tp) or None)
        if not uploads:
            return
        starts: Mapping[Any, int] = await self.earliest_offsets(*uploads)
        for tp in uploads:
            start = starts.get(tp)
            if start is None:
                continue
            self.upload_offsets.set_log_start(tp, start)
            if not self._committed_offset.get(tp):
                # Faust seeks only to committed offsets above 0: read a never-committed
                # partition from its start again, as a fresh consumer would.
                await self.seek(tp, start)


def scan_offsets(
    options: Mapping[str, Any], topic: str, partition: int, start: int, stop: int, timeout_seconds: float = 10.0
) -> tuple[set[int], int]:
    """Ask the broker which offsets from ``start`` to ``stop - 1`` hold a record (blocking).

    ``options`` are kafka-python connection options.  Returns the offsets
    that hold one and how far the scan got: every offset before that was
    either seen or holds no record to a consumer (a transaction marker, a
    compacted or deleted record), exactly as the worker's own consumer sees
    the partition.  The scan stops at ``stop`` or after ``timeout_seconds``.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **options,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="motionguard-offset-scan",
    )
    present: set[int] = set()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_seconds
        reached = start
        while reached < stop and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=500).get(tp, []):
                if start <= record.offset < stop:
                    present.add(int(record.offset))
            reached = max(reached, int(consumer.position(tp)))
        return present, min(reached, stop)
    finally:
        consumer.close()
