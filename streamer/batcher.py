"""Shared model batches: frames from concurrent upload events meet in one model call.

Up to ``batch_max_events`` events are processed concurrently
(:mod:`streamer.uploads`); each hands its sampled frames to
:meth:`ModelBatcher.embed` and awaits its embeddings.  The batcher runs one
model call, in the model's own thread pool, per batch of up to ``max_videos``
videos or ``window_seconds`` after the first one arrived.  A model failure is
the failure of every event waiting in that batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from detectors.types import FloatArray, SampledFrames
from streamer.metrics import WorkerMetrics

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    frames: SampledFrames
    future: asyncio.Future[FloatArray]


@dataclass
class ModelBatcher:
    """Gathers frames from concurrent events into shared model calls."""

    embed_many: Callable[[list[SampledFrames]], list[FloatArray]]
    executor: ThreadPoolExecutor
    metrics: WorkerMetrics
    max_videos: int
    window_seconds: float
    _queue: list[_Pending] = field(default_factory=list)
    _wakeup: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None

    async def embed(self, frames: SampledFrames) -> FloatArray:
        loop = asyncio.get_running_loop()
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="model-batcher")
        future: asyncio.Future[FloatArray] = loop.create_future()
        self._queue.append(_Pending(frames, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                continue
            deadline = loop.time() + self.window_seconds
            while len(self._queue) < self.max_videos and loop.time() < deadline:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, deadline - loop.time()))
                    self._wakeup.clear()
                except TimeoutError:
                    break
            batch, self._queue = self._queue[: self.max_videos], self._queue[self.max_videos :]
            if self._queue:
                self._wakeup.set()
            live = [item for item in batch if not item.future.cancelled()]
            if not live:
                continue
            frames = [item.frames for item in live]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.embed_many, frames)
            except Exception as e:  # a model failure is every waiting event's failure
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            elapsed = time.perf_counter() - started
            total_frames = sum(len(f) for f in frames)
            self.metrics.batch_videos.observe(len(live))
            self.metrics.batch_frames.observe(total_frames)
            self.metrics.frames_embedded.inc(total_frames)
            for item, embeddings in zip(live, results, strict=True):
                self.metrics.stage_seconds.labels(stage="embed").observe(
                    elapsed * len(item.frames) / max(total_frames, 1)
                )
                if not item.future.done():
                    item.future.set_result(embeddings)
