"""The uploads commit tracker (no broker): only a finished prefix is committed, and in-flight is bounded by it."""

from __future__ import annotations

from collections.abc import Hashable

from streamer.offsets import UploadOffsets


def take(offsets: UploadOffsets, *numbers: int, tp: Hashable = "p0") -> None:
    for offset in numbers:
        assert offsets.take(tp, offset)


def finish(offsets: UploadOffsets, *numbers: int, tp: Hashable = "p0") -> None:
    for offset in numbers:
        offsets.finish(tp, offset)


def test_events_finishing_out_of_order_commit_only_the_done_prefix() -> None:
    offsets = UploadOffsets()
    take(offsets, 0, 1, 2)
    finish(offsets, 2, 1)
    assert offsets.commits() == {}, "0 is still in flight"
    assert offsets.frontier("p0") == 0
    finish(offsets, 0)
    assert offsets.commits() == {"p0": 3}
    offsets.committed("p0", 3)
    assert offsets.commits() == {}, "nothing new to commit"
    assert offsets.frontier("p0") == 3


def test_an_unfinished_event_holds_back_every_later_one() -> None:
    offsets = UploadOffsets()
    take(offsets, 10, 11, 12, 13)
    finish(offsets, 10, 12, 13)
    assert offsets.commits() == {"p0": 11}
    offsets.committed("p0", 11)
    assert offsets.commits() == {}
    finish(offsets, 11)
    assert offsets.commits() == {"p0": 14}


def test_in_flight_counts_every_event_a_crash_would_process_again() -> None:
    offsets = UploadOffsets()
    take(offsets, 0, 1, 2)
    take(offsets, 0, tp="p1")
    assert offsets.in_flight() == 4
    finish(offsets, 0, 1)
    assert offsets.in_flight() == 4, "finished but not committed: still processed again after a crash"
    assert offsets.unfinished() == 2 and offsets.unfinished({"p0"}) == 1
    offsets.committed("p0", 1)  # a commit that covers only part of what is finished now
    assert offsets.in_flight() == 3
    offsets.committed("p0", 2)
    assert offsets.in_flight() == 2


def test_offsets_without_a_record_between_taken_ones_are_committed_past() -> None:
    """A transaction marker at 11 and a compacted record at 13: the consumer never returns them."""
    offsets = UploadOffsets()
    take(offsets, 10, 12, 14)
    finish(offsets, 10, 12)
    assert offsets.commits() == {"p0": 13}
    finish(offsets, 14)
    assert offsets.commits() == {"p0": 15}


def test_partitions_are_independent() -> None:
    offsets = UploadOffsets()
    take(offsets, 0)
    take(offsets, 0, 1, tp="p1")
    finish(offsets, 0, 1, tp="p1")
    assert offsets.commits() == {"p1": 2}
    assert offsets.frontier("p0") == 0 and offsets.frontier("p2") is None


def test_a_record_returned_again_is_not_taken_twice() -> None:
    """After a reset of the fetch position, records already taken come back: they are in hand or answered."""
    offsets = UploadOffsets()
    take(offsets, 5, 6)
    assert not offsets.take("p0", 5), "in flight already"
    finish(offsets, 5)
    assert not offsets.take("p0", 5), "answered already"
    assert offsets.take("p0", 7)
    assert offsets.in_flight() == 3


def test_a_revoked_partition_is_forgotten_and_late_finishes_change_nothing() -> None:
    offsets = UploadOffsets()
    take(offsets, 0, 1)
    finish(offsets, 0)
    offsets.revoke("p0")
    assert offsets.commits() == {} and offsets.in_flight() == 0
    finish(offsets, 1)  # an event that kept running after the rebalance
    assert offsets.commits() == {} and offsets.frontier("p0") is None
    # Assigned again later: it starts where the group's commit says, as a new partition.
    take(offsets, 1)
    finish(offsets, 1)
    assert offsets.commits() == {"p0": 2}
