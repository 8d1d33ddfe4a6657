"""The evidence beside an item: the video file and its sampled frames.

Media goes through the worker's URI guards (:mod:`streamer.sources`, the same
:class:`~streamer.sources.SourcePolicy` built from the same settings):
``file://`` URIs must resolve inside an allowed root (symlinks out refused),
``http(s)://`` hosts are checked (private addresses refused unless allowed)
and downloaded once, within the size and time limits, into a small cache
that the media route serves (Starlette's ``FileResponse`` answers ``Range``
requests, so the player can seek).

Thumbnails are sampled again on demand with the core's sampler
(:class:`detectors.sampling.FfmpegSampler`) using the worker's frame count
and seek mode, so they are the frames the model saw (to within a frame: the
frames' times are in the verdict's segments).  Each thumbnail shows that
frame's probability of being AI-generated from the verdict (``p(AI)``), or,
for a verdict older than schema 3 or a frame the verdict does not list, the
score of the segment it falls in.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from detectors.sampling import FfmpegSampler
from streamer.settings import WorkerSettings
from streamer.sources import SourcePolicy, open_source, resolve_local

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thumbnail:
    seconds: float
    jpeg: bytes


class Evidence:
    """Local copies of videos (guarded) and their thumbnails, with small LRU caches."""

    def __init__(self, settings: WorkerSettings, thumbnail_pixels: int, cached_videos: int = 8) -> None:
        self.policy = SourcePolicy.from_settings(settings, download_dir=str(Path(settings.download_dir) / "review"))
        self.thumbnail_pixels = thumbnail_pixels
        # The worker's sampling, decoded on the CPU: the console serves moderators, not throughput.
        self.sampling = settings.sampling_config(frames=max(1, settings.frames or 16), hw_decode="none")
        self.cache_dir = self.policy.download_dir
        self._cached_videos = cached_videos
        self._downloads: OrderedDict[str, Path] = OrderedDict()
        self._thumbnails: OrderedDict[tuple[str, int], list[Thumbnail]] = OrderedDict()
        self._lock = threading.Lock()

    def local_path(self, uri: str) -> Path:
        """The file to serve for ``uri``; raises a :class:`~detectors.errors.SourceError` when refused."""
        if urlsplit(uri).scheme.lower() == "file":
            return resolve_local(uri, self.policy)
        key = hashlib.sha256(uri.encode()).hexdigest()
        with self._lock:
            cached = self._downloads.get(key)
            if cached is not None and cached.exists():
                self._downloads.move_to_end(key)
                return cached
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        target = self.cache_dir / key
        with open_source(uri, self.policy) as downloaded:  # the guards refuse forbidden schemes and hosts
            shutil.copyfile(downloaded, target)
        with self._lock:
            self._downloads[key] = target
            while len(self._downloads) > self._cached_videos:
                _, old = self._downloads.popitem(last=False)
                old.unlink(missing_ok=True)
        return target

    def thumbnails(self, uri: str, frames: int) -> list[Thumbnail]:
        """``frames`` frames sampled like the worker did (blocking: call it in a thread)."""
        frames = max(1, min(frames or self.sampling.frames, self.sampling.max_frames))
        key = (uri, frames)
        with self._lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        path = self.local_path(uri)
        sampler = FfmpegSampler(replace(self.sampling, frames=frames))
        sampled = sampler.sample(path, self.thumbnail_pixels)
        result = []
        for pixels, seconds in zip(sampled.frames, sampled.timestamps_seconds, strict=True):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
            result.append(Thumbnail(seconds=float(seconds), jpeg=buffer.getvalue()))
        with self._lock:
            self._thumbnails[key] = result
            while len(self._thumbnails) > 32:
                self._thumbnails.popitem(last=False)
        return result
