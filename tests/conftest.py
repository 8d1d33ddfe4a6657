"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import pytest

from tests.videofactory import VideoCache, ffmpeg_available


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> VideoCache:
    """Synthetic videos made with the real ffmpeg, each built once per session.

    ``videos.video(codec="vp9", seconds=1)`` takes
    :func:`tests.videofactory.make_video`'s keyword arguments;
    ``videos.file("name.ext", build)`` caches any other generated file.
    """
    if not ffmpeg_available():
        pytest.fail("ffmpeg and ffprobe must be installed to build the test videos")
    return VideoCache(tmp_path_factory.mktemp("videos"))
