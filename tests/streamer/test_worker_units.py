"""Worker pieces that need no broker: the skipped-ack guard and the catch-all error verdict."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from detectors.loading import DetectorOptions, build_detector
from detectors.types import SampledFrames
from streamer.settings import WorkerSettings
from streamer.worker import MotionGuardWorker, OffsetOrderedAcks, RefetchWatchdog, guard_skipped_acks
from tests.videofactory import make_video


@dataclass
class FakeMessage:
    topic: str
    offset: int
    tracked: bool
    acked: bool = False


class RecordingConsumer:
    """Stands in for Faust's consumer: records which offsets would count as done."""

    def __init__(self) -> None:
        self.recorded: list[tuple[str, int]] = []

    def ack(self, message: Any) -> bool:
        message.acked = True
        self.recorded.append((message.topic, message.offset))
        return True


def test_skipped_upload_events_are_acknowledged_but_never_counted_as_done() -> None:
    consumer = RecordingConsumer()
    guard_skipped_acks(consumer, "uploads")
    guard_skipped_acks(consumer, "uploads")  # idempotent: a second rebalance must not wrap twice

    handed = FakeMessage("uploads", 7, tracked=True)
    skipped = FakeMessage("uploads", 8, tracked=False)
    label = FakeMessage("labels", 3, tracked=False)

    assert consumer.ack(handed) is True
    assert consumer.ack(skipped) is False
    assert consumer.ack(label) is True

    assert skipped.acked, "nothing may wait for a skipped event"
    assert consumer.recorded == [("uploads", 7), ("labels", 3)], "a skipped upload's offset must not be committed"


def test_events_are_released_for_acknowledgement_in_offset_order_per_partition() -> None:
    acks: OffsetOrderedAcks[object] = OffsetOrderedAcks()
    event = {offset: object() for offset in (4, 5, 6, 9)}
    for offset in (4, 5, 6):
        acks.handed("p0", offset, event[offset])
    acks.handed("p1", 9, event[9])
    # 5 and 6 finish first: acknowledging them would let Faust commit 7 while 4 is still in flight.
    assert acks.done("p0", event[6]) == []
    assert acks.done("p0", event[5]) == []
    assert acks.done("p1", event[9]) == [event[9]], "partitions are independent"
    assert acks.in_flight() == 3
    assert acks.done("p0", event[4]) == [event[4], event[5], event[6]]
    assert acks.in_flight() == 0


def test_a_refetched_offset_waits_for_its_earlier_copy() -> None:
    """After a rebalance the same offset can be handed again while the first copy is still running."""
    acks: OffsetOrderedAcks[object] = OffsetOrderedAcks()
    first, second, after = object(), object(), object()
    acks.handed("p0", 3, first)
    acks.handed("p0", 3, second)
    acks.handed("p0", 4, after)
    assert acks.done("p0", second) == []
    assert acks.done("p0", after) == []
    assert acks.done("p0", first) == [first, second, after]
    with pytest.raises(KeyError):
        acks.done("p0", object())


def test_a_partition_whose_fetched_events_never_arrived_is_fetched_again() -> None:
    watchdog = RefetchWatchdog(stuck_seconds=15.0, max_seeks=2)
    # Busy, or position not past the committed offset: never a re-fetch.
    assert watchdog.check("p0", committed=12, position=20, idle=False, now=0.0) is None
    assert watchdog.check("p1", committed=12, position=12, idle=True, now=100.0) is None
    assert watchdog.check("p2", committed=None, position=20, idle=True, now=100.0) is None
    # Idle, committed stuck at 12 while the fetch position is 20: re-fetch from 12 once it has lasted 15 s.
    assert watchdog.check("p0", committed=12, position=20, idle=True, now=1.0) is None
    assert watchdog.check("p0", committed=12, position=20, idle=True, now=10.0) is None
    assert watchdog.check("p0", committed=12, position=20, idle=True, now=16.0) == 12
    assert watchdog.check("p0", committed=12, position=20, idle=True, now=20.0) is None, "waits again after a seek"
    assert watchdog.check("p0", committed=12, position=20, idle=True, now=31.0) == 12
    assert watchdog.check("p0", committed=12, position=20, idle=True, now=100.0) is None, "at most max_seeks"
    # Progress resets the count.
    assert watchdog.check("p0", committed=20, position=25, idle=True, now=101.0) is None
    assert watchdog.check("p0", committed=20, position=25, idle=True, now=116.0) == 20


@pytest.fixture(scope="module")
def detector() -> Any:
    return build_detector(DetectorOptions(model="tiny-test", pretrained="none", device="cpu", frames=2))


def make_worker(detector: Any, root: Path) -> tuple[MotionGuardWorker, list[tuple[str, Any, bytes]]]:
    settings = WorkerSettings(allowed_roots=(str(root),), data_dir=str(root / "data"), worker_name="unit")
    worker = MotionGuardWorker(settings, detector)
    sent: list[tuple[str, Any, bytes]] = []

    async def send(topic: Any, key: str | None, value: bytes) -> None:
        sent.append((topic.get_topic_name(), key, value))

    worker._send = send  # type: ignore[method-assign]
    # The label-join tables are Faust state that only exists inside a running agent.
    remembered: list[tuple[str, str]] = []
    worker._remember_verdict = lambda video_id, verdict: remembered.append((video_id, verdict))  # type: ignore[method-assign]
    return worker, sent


def test_an_unexpected_model_failure_becomes_an_error_verdict_and_a_dead_letter(detector: Any, tmp_path: Path) -> None:
    video = make_video(tmp_path / "ok.mp4", codec="h264", seconds=1.0, width=64, height=48, fps=10)
    worker, sent = make_worker(detector, tmp_path)

    def exploding_model(batch: list[SampledFrames]) -> list[Any]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    worker.batcher.embed_many = exploding_model
    event = json.dumps({"video_id": "v-1", "uri": video.as_uri()}).encode()
    try:
        asyncio.run(worker.handle_upload(b"v-1", event))  # must not raise: the partition would stall
    finally:
        worker.close()

    settings = worker.settings
    by_topic = {topic: (key, json.loads(value)) for topic, key, value in sent}
    assert set(by_topic) == {settings.topics.verdicts, settings.topics.dead_letters}
    key, verdict = by_topic[settings.topics.verdicts]
    assert key == "v-1"
    assert verdict["verdict"] == "error"
    assert verdict["error"]["code"] == "internal_error"
    assert "illegal memory access" in verdict["error"]["message"]
    _, dead_letter = by_topic[settings.topics.dead_letters]
    assert dead_letter["reason"] == "internal_error"
    assert dead_letter["original"] == event.decode()
    assert worker.metrics.in_flight._value.get() == 0


def test_a_failing_label_join_does_not_hold_back_the_verdict(detector: Any, tmp_path: Path) -> None:
    video = make_video(tmp_path / "ok.mp4", codec="h264", seconds=1.0, width=64, height=48, fps=10)
    worker, sent = make_worker(detector, tmp_path)

    def broken_join(video_id: str, verdict: str) -> None:
        raise RuntimeError("table unavailable")

    worker._remember_verdict = broken_join  # type: ignore[method-assign]
    event = json.dumps({"video_id": "v-2", "uri": video.as_uri()}).encode()
    try:
        asyncio.run(worker.handle_upload(b"v-2", event))
    finally:
        worker.close()
    assert [(topic, key) for topic, key, _ in sent] == [(worker.settings.topics.verdicts, "v-2")]
    verdict = json.loads(sent[0][2])
    assert verdict["error"] is None and verdict["frames_scored"] == 2
