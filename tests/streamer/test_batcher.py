"""ModelBatcher: frames from concurrent events share model calls (no broker needed)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detectors.types import SampledFrames, VideoProbe
from streamer.batcher import ModelBatcher
from streamer.metrics import WorkerMetrics

PROBE = VideoProbe("x.mp4", "mov", "h264", 8, 8, 0, 1.0, 25.0, 25, 100)


def frames(n: int, value: int) -> SampledFrames:
    return SampledFrames(
        frames=np.full((n, 8, 8, 3), value, dtype=np.uint8),
        timestamps_seconds=np.arange(n, dtype=np.float64),
        probe=PROBE,
    )


class RecordingModel:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.fail = fail

    def embed_many(self, batch: list[SampledFrames]) -> list[np.ndarray]:
        self.calls.append([len(item) for item in batch])
        if self.fail:
            raise RuntimeError("model exploded")
        # Each row carries its video's pixel value, so results can be matched to callers.
        return [np.full((len(item), 2), float(item.frames[0, 0, 0, 0]), dtype=np.float32) for item in batch]


def make_batcher(model: RecordingModel, max_videos: int, window_seconds: float) -> tuple[ModelBatcher, WorkerMetrics]:
    metrics = WorkerMetrics(CollectorRegistry())
    batcher = ModelBatcher(
        embed_many=model.embed_many,
        executor=ThreadPoolExecutor(1),
        metrics=metrics,
        max_videos=max_videos,
        window_seconds=window_seconds,
    )
    return batcher, metrics


def test_concurrent_events_share_batches_up_to_the_limit() -> None:
    model = RecordingModel()
    batcher, metrics = make_batcher(model, max_videos=3, window_seconds=0.5)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.embed(frames(i + 1, i)) for i in range(5)))

    results = asyncio.run(main())
    assert model.calls == [[1, 2, 3], [4, 5]]
    for i, result in enumerate(results):  # every caller gets its own rows back
        assert result.shape == (i + 1, 2) and np.all(result == i)
    assert metrics.frames_embedded._value.get() == 15
    assert metrics.batch_videos._sum.get() == 5


def test_a_lone_event_waits_at_most_the_window() -> None:
    model = RecordingModel()
    batcher, _ = make_batcher(model, max_videos=8, window_seconds=0.05)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.embed(frames(2, 7))
        return loop.time() - started

    elapsed = asyncio.run(main())
    assert model.calls == [[2]]
    assert elapsed < 5.0  # bounded by the window, not by waiting for a full batch


def test_a_model_failure_reaches_every_waiting_event() -> None:
    model = RecordingModel(fail=True)
    batcher, _ = make_batcher(model, max_videos=4, window_seconds=0.2)

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.embed(frames(1, i)) for i in range(3)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert isinstance(outcome, RuntimeError) and "exploded" in str(outcome)


@pytest.mark.parametrize("bad", [0, -1])
def test_settings_reject_an_empty_batch(bad: int) -> None:
    from streamer.settings import WorkerSettings

    with pytest.raises(ValueError):
        WorkerSettings(batch_max_events=bad)


def test_the_worker_does_not_import_the_training_code() -> None:
    import subprocess
    import sys

    code = "import sys, streamer.worker; print(sorted(m for m in sys.modules if m.startswith('detectors.training')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
