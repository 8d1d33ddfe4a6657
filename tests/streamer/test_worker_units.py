"""Worker pieces that need no broker: the catch-all error verdict, a failing label join, the uploads consumer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from detectors.loading import DetectorOptions, build_detector
from detectors.types import SampledFrames
from streamer.offsets import UploadsConsumer
from streamer.settings import WorkerSettings
from streamer.worker import MotionGuardWorker
from tests.videofactory import make_video


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


def test_uploads_commits_follow_the_frontier_and_other_topics_keep_fausts_rule(detector: Any, tmp_path: Path) -> None:
    worker, _ = make_worker(detector, tmp_path)
    consumer = worker.app.consumer
    try:
        assert isinstance(consumer, UploadsConsumer)
        uploads = TP(worker.settings.topic_uploads, 0)
        labels = TP(worker.settings.topic_labels, 0)
        worker.offsets.set_log_start(uploads, 0)
        # Faust saw acks for offsets 1 and 2 of both topics; offset 0 of the uploads topic has no outcome.
        for tp in (uploads, labels):
            consumer._acked[tp].extend([1, 2])
            consumer._acked_index[tp].update([1, 2])
        for offset in (1, 2):
            worker.offsets.handed(uploads, offset)
            worker.offsets.done(uploads, offset)
        assert consumer._filter_committable_offsets([uploads, labels]) == {labels: 3}
        worker.offsets.handed(uploads, 0)
        worker.offsets.done(uploads, 0)
        assert consumer._filter_committable_offsets([uploads]) == {uploads: 3}
        assert consumer._acked[uploads] == [], "Faust's own ack record of the uploads topic is not kept"
        # Records fetched again after a seek are delivered for the uploads topic, however far Faust read.
        consumer._read_offset[uploads] = 40
        consumer._read_offset[labels] = 40
        assert consumer._read_offset[uploads] is None
        assert consumer._read_offset[labels] == 40
    finally:
        worker.app.loop.close()


def record(tp: TP, offset: int) -> ConsumerRecord[bytes, bytes]:
    """A fetched record as aiokafka hands it to Faust."""
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"{}", None, 1, 2, [])


def serve_batch(monkeypatch: pytest.MonkeyPatch, batch: dict[TP, list[ConsumerRecord[bytes, bytes]]]) -> None:
    """Every fetch of Faust's consumer returns ``batch``."""

    async def fetch(self: Any, timeout: float) -> tuple[Any, Any]:
        return batch, set(batch)

    monkeypatch.setattr(FaustConsumer, "_wait_next_records", fetch)


def test_uploads_messages_carry_the_fetch_epoch_of_the_batch_they_were_fetched_in(
    detector: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, _ = make_worker(detector, tmp_path)
    consumer = worker.app.consumer
    uploads = TP(worker.settings.topic_uploads, 0)
    labels = TP(worker.settings.topic_labels, 0)
    batch = {uploads: [record(uploads, 7), record(uploads, 8)], labels: [record(labels, 7)]}
    serve_batch(monkeypatch, batch)
    sought: list[tuple[TP, int]] = []

    async def move_position(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    monkeypatch.setattr(consumer, "_seek", move_position)

    async def scenario() -> list[Any]:
        await consumer._wait_next_records(1.0)
        first = consumer._to_message(uploads, batch[uploads][0])
        # A seek while Faust is still turning the batch into messages, one by one.
        await consumer.seek(uploads, 5)
        await consumer.seek(labels, 5)
        rest = consumer._to_message(uploads, batch[uploads][1])
        label = consumer._to_message(labels, batch[labels][0])
        await consumer._wait_next_records(1.0)
        refetched = consumer._to_message(uploads, batch[uploads][0])
        return [first, rest, label, refetched]

    try:
        messages = asyncio.run(scenario())
    finally:
        worker.close()
    offsets = worker.offsets
    assert [offsets.fetch_epoch(m) for m in messages] == [0, 0, None, 1]
    assert offsets.current_epoch(uploads) == 1
    assert sought == [(uploads, 5), (labels, 5)], "the seeks themselves still reach the consumer"
    # The batch fetched before the seek is no evidence against offset 5's new copy; the next one is.
    offsets.set_log_start(uploads, 5)
    offsets.handed(uploads, 8, offsets.fetch_epoch(messages[1]))
    assert offsets.stalled(uploads, committed=None, position=9, idle=False, now=0.0) is None
    assert offsets.stalled(uploads, committed=None, position=9, idle=False, now=100.0) is None
    offsets.handed(uploads, 7, offsets.fetch_epoch(messages[3]))
    assert offsets.stalled(uploads, committed=None, position=9, idle=False, now=101.0) is None
    assert offsets.stalled(uploads, committed=None, position=9, idle=False, now=116.0) == 5


def test_a_batch_fetched_while_faust_seeks_to_the_committed_offsets_is_processed(
    detector: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what was fetched before the seek started is stale; where Faust sought is known after it."""
    worker, _ = make_worker(detector, tmp_path)
    consumer = worker.app.consumer
    uploads = TP(worker.settings.topic_uploads, 0)
    batch = {uploads: [record(uploads, 5), record(uploads, 6)]}
    serve_batch(monkeypatch, batch)

    async def faust_perform_seek(self: Any) -> None:
        # Faust asks the broker for the committed offsets and seeks there (5); meanwhile the
        # consumer's own thread returns a batch that may already come from the new position.
        await consumer._wait_next_records(1.0)
        self._committed_offset[uploads] = 5

    async def log_starts(*tps: Any) -> dict[Any, int]:
        return dict.fromkeys(tps, 0)

    monkeypatch.setattr(FaustConsumer, "perform_seek", faust_perform_seek)
    monkeypatch.setattr(consumer, "assignment", lambda: {uploads})
    monkeypatch.setattr(consumer, "earliest_offsets", log_starts)

    async def scenario() -> list[Any]:
        await consumer._wait_next_records(1.0)
        before = [consumer._to_message(uploads, record) for record in batch[uploads]]
        await consumer.perform_seek()
        during = [consumer._to_message(uploads, record) for record in batch[uploads]]
        return before + during

    try:
        messages = asyncio.run(scenario())
    finally:
        worker.close()
    offsets = worker.offsets
    superseded = [offsets.superseded(uploads, m.offset, offsets.fetch_epoch(m)) for m in messages]
    assert superseded == [True, True, False, False], "fetched before the seek: fetched again from 5"
    assert offsets.frontier(uploads, committed=5) == 5
