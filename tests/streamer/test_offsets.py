"""The uploads commit frontier (no broker) and the broker lookup that finds offsets without a record."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from detectors.loading import DetectorOptions, build_detector
from streamer.offsets import UploadOffsets, scan_offsets
from streamer.settings import WorkerSettings
from streamer.worker import MotionGuardWorker


def started(log_start: int = 0) -> UploadOffsets:
    offsets = UploadOffsets(stall_seconds=15.0)
    offsets.set_log_start("p0", log_start)
    return offsets


def finish(offsets: UploadOffsets, *numbers: int, tp: Hashable = "p0") -> None:
    for offset in numbers:
        offsets.handed(tp, offset)
        offsets.done(tp, offset)


def test_events_finishing_out_of_order_commit_only_the_done_prefix() -> None:
    offsets = started()
    for offset in (0, 1, 2):
        offsets.handed("p0", offset)
    offsets.done("p0", 2)
    offsets.done("p0", 1)
    assert offsets.next_commit("p0", committed=None) is None, "0 is still in flight"
    offsets.done("p0", 0)
    assert offsets.next_commit("p0", committed=None) == 3
    assert offsets.next_commit("p0", committed=3) is None, "nothing new to commit"


def test_an_event_never_handed_holds_the_commit_back() -> None:
    """Faust dropped offset 0 (never committed) and offset 10 (committed 10): later events do not commit past them."""
    offsets = started()
    finish(offsets, 1, 2, 3)
    assert offsets.next_commit("p0", committed=None) is None
    finish(offsets, 11, 12)
    assert offsets.next_commit("p0", committed=10) is None, "Faust's own rule would commit 13 here"
    finish(offsets, 10)
    assert offsets.next_commit("p0", committed=10) == 13


def test_a_never_committed_partition_commits_nothing_until_its_log_start_is_known() -> None:
    offsets = UploadOffsets()
    finish(offsets, 5, 6)
    assert offsets.next_commit("p0", committed=None) is None
    offsets.set_log_start("p0", 5)
    assert offsets.next_commit("p0", committed=None) == 7


def test_partitions_are_independent() -> None:
    offsets = started()
    offsets.set_log_start("p1", 0)
    offsets.handed("p0", 0)
    finish(offsets, 0, 1, tp="p1")
    assert offsets.next_commit("p0", committed=None) is None
    assert offsets.next_commit("p1", committed=None) == 2
    assert offsets.in_flight() == 1


def test_offsets_without_a_record_and_records_deleted_by_retention_are_stepped_over() -> None:
    offsets = started()
    finish(offsets, 12, 13)
    offsets.mark_absent("p0", 10, 12)  # e.g. a transaction marker and an aborted record
    assert offsets.next_commit("p0", committed=10) == 14
    offsets.set_log_start("p0", 40)  # retention deleted everything before 40
    finish(offsets, 40)
    assert offsets.next_commit("p0", committed=14) == 41


def test_a_scan_marks_every_offset_it_did_not_see_as_absent() -> None:
    offsets = started()
    finish(offsets, 0, 2, 5)
    # The broker scan from 1 reached 8 and saw records at 1, 2, 5 and 6 only.
    assert offsets.mark_scanned("p0", 1, 8, {1, 2, 5, 6}) == 3
    assert offsets.next_commit("p0", committed=None) == 1, "1 holds an event without an outcome"
    finish(offsets, 1)
    assert offsets.next_commit("p0", committed=1) == 6, "3 and 4 hold no record"
    finish(offsets, 6)
    assert offsets.next_commit("p0", committed=6) == 8, "7 holds no record"


def test_an_offset_handed_twice_is_in_flight_until_both_copies_finish() -> None:
    offsets = started()
    offsets.handed("p0", 0)
    offsets.handed("p0", 0)  # fetched again after a seek while the first copy still runs
    offsets.done("p0", 0)
    assert offsets.in_flight() == 1
    offsets.done("p0", 0)
    assert offsets.in_flight() == 0
    assert offsets.next_commit("p0", committed=None) == 1


def test_a_fetched_event_that_never_reached_an_actor_is_reported_after_the_stall_time() -> None:
    offsets = started()
    finish(offsets, 0, 1)
    # Nothing fetched past the frontier (2), or the frontier event is being processed: never stalled.
    assert offsets.stalled("p0", committed=None, position=2, idle=True, now=0.0) is None
    offsets.handed("p0", 2)
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=0.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=100.0) is None
    offsets.done("p0", 2)
    # 3 was fetched (position 9) but a busy worker may still have it queued: not yet suspect.
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=100.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=200.0) is None
    # A later offset was handed while 3 was not: 3 was dropped. Reported once it lasts 15 s.
    finish(offsets, 4)
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=201.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=215.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=216.0) == 3
    # Still missing after the re-read: the next report waits twice as long.
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=245.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=246.0) == 3
    # Once 3 has its outcome the frontier moves on: 5 is missing too, but an idle worker
    # says so only after a fresh stall time.
    finish(offsets, 3)
    assert offsets.stalled("p0", committed=None, position=9, idle=True, now=250.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=True, now=265.0) == 5


def test_events_queued_before_a_seek_back_are_no_evidence_that_the_frontier_was_dropped_again() -> None:
    offsets = started()
    finish(offsets, 0, 1)
    before = offsets.current_epoch("p0")
    finish(offsets, 3)  # 2 was dropped; 3 overtook it
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=0.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=15.0) == 2
    offsets.sought("p0", 2)  # fetched again from 2; 4 to 8 were handed before the seek
    assert offsets.current_epoch("p0") == before + 1
    for offset in range(4, 9):
        offsets.handed("p0", offset, fetch_epoch=before)
        offsets.done("p0", offset)
    # 2's new copy waits behind them in the queue: not suspect however long that takes.
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=20.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=500.0) is None
    # A later offset fetched after the seek reached an actor first: 2 was dropped again.
    offsets.handed("p0", 3, fetch_epoch=before + 1)
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=501.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=520.0) is None  # second report: 30 s
    assert offsets.stalled("p0", committed=None, position=9, idle=False, now=531.0) == 2
    # An idle worker has nothing queued: the frontier was dropped, whatever was handed since
    # the seek. The third report waits 60 s.
    offsets.done("p0", 3)
    offsets.sought("p0", 2)
    assert offsets.stalled("p0", committed=None, position=9, idle=True, now=590.0) is None
    assert offsets.stalled("p0", committed=None, position=9, idle=True, now=591.0) == 2


def test_a_copy_answered_already_or_queued_before_a_seek_back_needs_no_processing() -> None:
    offsets = started()
    finish(offsets, 0, 1, 4)
    first = offsets.current_epoch("p0")
    assert offsets.superseded("p0", 4, first), "4 has its outcome"
    assert not offsets.superseded("p0", 2, first)
    offsets.sought("p0", 2)
    assert offsets.superseded("p0", 3, first), "queued before the seek, which fetches 3 again"
    assert not offsets.superseded("p0", 3, first + 1), "the copy fetched after the seek"
    assert not offsets.superseded("p0", 3, None), "a copy without a fetch epoch is processed"
    # A later seek past 3 means 3 is not fetched again: its earlier copy must be processed.
    offsets.sought("p0", 6)
    assert not offsets.superseded("p0", 3, first + 1)
    assert offsets.superseded("p0", 7, first + 1)
    # Where a seek went is unknown: every copy is processed, until it is known.
    third = offsets.sought("p0", None)
    assert not offsets.superseded("p0", 7, first + 2)
    offsets.seek_target("p0", third, 6)
    assert offsets.superseded("p0", 7, first + 2)
    offsets.seek_target("p0", third - 1, 9)  # a stale answer about an earlier seek changes nothing
    assert offsets.superseded("p0", 7, first + 2)


def test_a_copy_below_the_last_commit_needs_no_processing_once_its_record_is_forgotten() -> None:
    offsets = started()
    finish(offsets, 0, 1, 2)
    assert offsets.next_commit("p0", committed=None) == 3  # 0 to 2 are forgotten now
    assert offsets.superseded("p0", 1, None)
    assert not offsets.superseded("p0", 3, None)


def test_a_fetch_epoch_is_recorded_per_message_and_forgotten_with_it() -> None:
    class Message:  # weakly referenceable, like Faust's messages
        pass

    offsets = started()
    message = Message()
    assert offsets.fetch_epoch(message) is None
    offsets.fetched(message, 3)
    assert offsets.fetch_epoch(message) == 3
    del message
    assert len(offsets._fetch_epochs) == 0


@pytest.fixture(scope="module")
def marked_topic(kafka_broker: Any) -> str:
    """One partition: records at offsets 0, 1 and 2 (2 in a transaction), its commit marker at 3, a record at 4."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = f"offsets-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="motionguard-tests")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    plain = KafkaProducer(bootstrap_servers=bootstrap)
    for n in range(2):
        plain.send(topic, key=b"k", value=b"%d" % n, partition=0).get(timeout=30)
    transactional = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-tx")
    transactional.init_transactions()
    transactional.begin_transaction()
    transactional.send(topic, key=b"k", value=b"tx", partition=0)
    transactional.commit_transaction()
    transactional.close()
    # The coordinator writes the commit marker after commit_transaction returns: wait for it.
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    partition = TopicPartition(topic, 0)
    deadline = time.monotonic() + 30
    while probe.end_offsets([partition])[partition] < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    probe.close()
    last = plain.send(topic, key=b"k", value=b"after", partition=0).get(timeout=30)
    plain.close()
    assert last.offset == 4, "expected the transaction's commit marker at offset 3"
    return topic


@pytest.mark.kafka
def test_the_broker_scan_tells_records_from_transaction_markers(kafka_broker: Any, marked_topic: str) -> None:
    options = {"bootstrap_servers": kafka_broker.bootstrap_servers}
    assert scan_offsets(options, marked_topic, 0, 0, 5) == ({0, 1, 2, 4}, 5)
    assert scan_offsets(options, marked_topic, 0, 3, 4) == (set(), 4), "offset 3 is the transaction's marker"
    assert scan_offsets(options, marked_topic, 0, 1, 3) == ({1, 2}, 3)
    present, reached = scan_offsets(options, marked_topic, 0, 5, 7, timeout_seconds=2.0)
    assert (present, reached) == (set(), 5), "nothing written past 4: the scan gets no further"


class SeekRecorder:
    """Stands in for the worker's Faust consumer, which only exists inside a running app."""

    def __init__(self) -> None:
        self.seeks: list[tuple[Any, int]] = []
        self.assigned: set[Any] = set()

    def assignment(self) -> set[Any]:
        return self.assigned

    async def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


@pytest.mark.kafka
def test_a_stalled_frontier_is_fetched_again_or_stepped_over_as_the_broker_says(
    kafka_broker: Any, marked_topic: str, tmp_path: Path
) -> None:
    detector = build_detector(DetectorOptions(model="tiny-test", pretrained="none", device="cpu", frames=2))
    settings = WorkerSettings(
        broker=f"kafka://{kafka_broker.bootstrap_servers}",
        topic_uploads=marked_topic,
        allowed_roots=(str(tmp_path),),
        data_dir=str(tmp_path / "data"),
    )
    worker = MotionGuardWorker(settings, detector)
    consumer = SeekRecorder()
    worker.app.consumer = consumer  # type: ignore[assignment]
    tp = TP(marked_topic, 0)
    consumer.assigned.add(tp)
    worker.offsets.set_log_start(tp, 0)
    finish(worker.offsets, 0, 2, 4, tp=tp)  # 1 was dropped; 3 is the transaction's marker
    try:
        asyncio.run(worker._recover_stalled(tp, 1, position=5))
        assert consumer.seeks == [(tp, 1)], "a record is there: it must be fetched again"
        assert worker.metrics.retries.labels(stage="refetch")._value.get() == 1
        assert worker.offsets.next_commit(tp, committed=None) == 1, "no further than the dropped event"
        finish(worker.offsets, 1, tp=tp)  # fetched again and processed
        assert worker.offsets.next_commit(tp, committed=1) == 5, "the marker at 3 is stepped over"

        # A frontier on the marker itself: stepped over without re-reading anything.
        worker.offsets = UploadOffsets()
        worker.offsets.set_log_start(tp, 0)
        finish(worker.offsets, 0, 1, 2, 4, tp=tp)
        asyncio.run(worker._recover_stalled(tp, 3, position=5))
        assert consumer.seeks == [(tp, 1)]
        assert worker.offsets.next_commit(tp, committed=None) == 5

        # A partition revoked while the broker was asked is not sought.
        consumer.assigned.clear()
        asyncio.run(worker._recover_stalled(tp, 1, position=5))
        assert consumer.seeks == [(tp, 1)]
    finally:
        worker.close()
