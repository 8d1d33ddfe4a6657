"""Worker pieces that need no broker: the catch-all error verdict, the label join apart from the verdict path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from detectors.loading import DetectorOptions, build_detector
from detectors.types import SampledFrames
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
        sent.append((topic, key, value))

    worker.scorer._send = send  # type: ignore[method-assign]
    return worker, sent


def test_an_unexpected_model_failure_becomes_an_error_verdict_and_a_dead_letter(detector: Any, tmp_path: Path) -> None:
    video = make_video(tmp_path / "ok.mp4", codec="h264", seconds=1.0, width=64, height=48, fps=10)
    worker, sent = make_worker(detector, tmp_path)

    def exploding_model(batch: list[SampledFrames]) -> list[Any]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    worker.batcher.embed_many = exploding_model
    event = json.dumps({"video_id": "v-1", "uri": video.as_uri()}).encode()
    try:
        asyncio.run(worker.scorer.handle_upload(b"v-1", event))  # must not raise: the partition would stall
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


def test_verdicts_read_back_from_the_topic_feed_the_label_join(detector: Any, tmp_path: Path) -> None:
    worker, _ = make_worker(detector, tmp_path)
    remembered: list[tuple[str, str]] = []
    worker.label_join._remember_verdict = lambda video_id, verdict: remembered.append((video_id, verdict))  # type: ignore[method-assign]
    try:
        worker.label_join.handle_verdict(
            b"v-3", json.dumps({"video_id": "v-3", "verdict": "real", "score": 0.1}).encode()
        )
        worker.label_join.handle_verdict(
            None, json.dumps({"video_id": None, "verdict": "error"}).encode()
        )  # no id: no join
        worker.label_join.handle_verdict(b"x", b"{not json")
        worker.label_join.handle_verdict(b"x", b"[1, 2]")
    finally:
        worker.close()
    assert remembered == [("v-3", "real")]
