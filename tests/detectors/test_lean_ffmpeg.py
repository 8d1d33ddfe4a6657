"""The lean static ffmpeg of ``scripts/build-ffmpeg.sh`` samples what the distribution's ffmpeg does.

The build takes minutes, so these tests run where it has been built (``make bench`` builds it
into ``.cache/ffmpeg-lean``; ``MOTIONGUARD_TEST_LEAN_FFMPEG=DIR`` points elsewhere) and are
skipped otherwise.  The same frames at the same times, for every codec the tests can encode,
rotated files, and the typed errors of bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.errors import CorruptVideoError, NotAVideoError
from detectors.sampling import FfmpegSampler, SamplingConfig
from tests.videofactory import VideoCache, make_text_file, make_truncated_copy

REPO = Path(__file__).resolve().parents[2]
LEAN = Path(os.environ.get("MOTIONGUARD_TEST_LEAN_FFMPEG") or REPO / ".cache" / "ffmpeg-lean" / "bin")
pytestmark = pytest.mark.skipif(
    not (os.access(LEAN / "ffmpeg", os.X_OK) and os.access(LEAN / "ffprobe", os.X_OK)),
    reason=f"no lean ffmpeg build in {LEAN} (bash scripts/build-ffmpeg.sh)",
)
SIZE = 48


def samplers(**options: Any) -> tuple[FfmpegSampler, FfmpegSampler]:
    lean = SamplingConfig(ffmpeg_binary=str(LEAN / "ffmpeg"), ffprobe_binary=str(LEAN / "ffprobe"), **options)
    return FfmpegSampler(SamplingConfig(**options)), FfmpegSampler(lean)


@pytest.mark.parametrize("codec", ["h264", "h265", "vp9", "av1", "mjpeg", "mpeg4", "prores", "gif"])
@pytest.mark.parametrize("seek", ["nearest_keyframe", "accurate"])
def test_the_same_frames_as_the_distributions_ffmpeg(videos: VideoCache, codec: str, seek: str) -> None:
    path = videos.video(codec=codec, seconds=3, width=160, height=96, fps=10)
    debian, lean = samplers(frames=6, seek=seek)
    expected, got = debian.sample(path, SIZE), lean.sample(path, SIZE)
    np.testing.assert_allclose(got.timestamps_seconds, expected.timestamps_seconds, atol=1e-6)
    difference = np.abs(got.frames.astype(np.int16) - expected.frames.astype(np.int16))
    assert difference.mean() < 1.0, f"{codec}: mean pixel difference {difference.mean():.2f}"
    assert got.probe == expected.probe


def test_rotated_video_comes_out_as_displayed(videos: VideoCache) -> None:
    path = videos.video(width=160, height=96, seconds=2, rotate=90)
    debian, lean = samplers(frames=4)
    expected, got = debian.sample(path, SIZE), lean.sample(path, SIZE)
    assert got.frames.shape == expected.frames.shape
    assert np.abs(got.frames.astype(np.int16) - expected.frames.astype(np.int16)).mean() < 1.0


def test_bad_input_gets_the_same_typed_errors(videos: VideoCache, tmp_path: Path) -> None:
    good = videos.video(seconds=2, width=96, height=64)
    cases = {
        make_text_file(tmp_path / "notes.txt"): NotAVideoError,
        make_truncated_copy(good, tmp_path / "truncated.mp4"): CorruptVideoError,
    }
    _, lean = samplers(frames=4)
    for path, error in cases.items():
        with pytest.raises(error):
            lean.sample(path, SIZE)
