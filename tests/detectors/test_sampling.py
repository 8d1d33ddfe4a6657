"""The frame sampler against real files made by the real ffmpeg.

Colour checks use solid-colour sources (lavfi ``color``): after a lossy
encode and YUV->RGB conversion a pure red pixel comes back within a few
levels of (255, 0, 0), so the thresholds below are loose on purpose.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    EmptyFileError,
    FfmpegNotFoundError,
    MotionGuardError,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedVideoError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from detectors.sampling import FfmpegSampler, SamplingConfig, probe_video
from detectors.sampling.hwdecode import check_cuda_decoding
from detectors.types import FrameSampler, SampledFrames
from tests.videofactory import (
    Bands,
    VideoCache,
    display_rotation_ccw,
    make_absurd_dimensions,
    make_audio_only,
    make_empty_file,
    make_text_file,
    make_truncated_copy,
    make_zero_frame_video,
)

SIZE = 224
#: Exact frames, in one pass from the start (the cost model's choice for these short
#: test videos) vs one seek per frame: both must give the same result.  The default,
#: keyframe-aware plan is tested in test_sampling_plan.py.
DECODE_MODES = {
    "sequential": SamplingConfig(seek="accurate"),
    "seek": SamplingConfig(seek="accurate", sequential_max_frames=0),
}


@pytest.fixture(params=sorted(DECODE_MODES))
def mode(request: pytest.FixtureRequest) -> SamplingConfig:
    """The default config in each decode mode; ``replace()`` it for other settings."""
    return DECODE_MODES[request.param]


@pytest.fixture
def sampler(mode: SamplingConfig) -> FfmpegSampler:
    return FfmpegSampler(mode)


def colour_of(pixels: np.ndarray) -> str:
    """'red', 'green', 'blue' or 'other' for the mean colour of a patch."""
    r, g, b = (float(c) for c in pixels.reshape(-1, 3).mean(axis=0))
    if r > 180 and g < 60 and b < 60:
        return "red"
    if b > 180 and r < 60 and g < 60:
        return "blue"
    if g > 90 and r < 60 and b < 60:  # lavfi "green" is (0, 128, 0)
        return "green"
    return "other"


def sides(frame: np.ndarray) -> dict[str, str]:
    """Colours near the middle of each edge of a square frame."""
    n = frame.shape[0]
    q, m = n // 5, n // 2
    return {
        "top": colour_of(frame[:q, m - q // 2 : m + q // 2]),
        "bottom": colour_of(frame[n - q :, m - q // 2 : m + q // 2]),
        "left": colour_of(frame[m - q // 2 : m + q // 2, :q]),
        "right": colour_of(frame[m - q // 2 : m + q // 2, n - q :]),
    }


def assert_well_formed(result: SampledFrames, count: int, size: int = SIZE) -> None:
    assert isinstance(result, SampledFrames)
    assert result.frames.shape == (count, size, size, 3)
    assert result.frames.dtype == np.uint8
    assert len(result) == count
    assert result.timestamps_seconds.dtype == np.float64
    assert result.timestamps_seconds.shape == (count,)
    ts = result.timestamps_seconds
    assert np.all(np.diff(ts) > 0), f"timestamps not strictly increasing: {ts}"
    assert ts[0] >= 0.0
    assert ts[-1] < result.probe.duration_seconds


def assert_on_frame_grid(timestamps: np.ndarray, fps: float) -> None:
    """Truthful timestamps of a constant-rate video are multiples of 1/fps."""
    ticks = timestamps * fps
    assert np.allclose(ticks, np.round(ticks), atol=1e-3), timestamps


def assert_error(excinfo: pytest.ExceptionInfo[MotionGuardError], kind: type[MotionGuardError]) -> None:
    error = excinfo.value
    assert type(error) is kind
    assert isinstance(error, MotionGuardError)
    assert error.code == kind.code
    assert error.message and error.to_dict() == {"code": kind.code, "message": error.message}


# --- configuration ------------------------------------------------------------------


def test_config_defaults() -> None:
    config = SamplingConfig()
    assert config.frames == 16
    assert config.rate_fps is None
    assert config.max_frames == 64
    assert config.max_file_bytes == 4 * 1024**3
    assert config.max_duration_seconds == 4 * 3600
    assert config.max_pixels == 8192 * 8192
    assert config.timeout_seconds == 60
    assert config.seek == "nearest_keyframe"
    assert config.keyframe_tolerance == 0.5
    assert config.sequential_max_frames is None
    assert (config.ffmpeg_binary, config.ffprobe_binary) == ("ffmpeg", "ffprobe")
    with pytest.raises(AttributeError):
        config.frames = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frames": 0},
        {"frames": -4},
        {"frames": 2.5},
        {"frames": 100},  # more than max_frames
        {"max_frames": 0},
        {"rate_fps": 0},
        {"rate_fps": -1.0},
        {"rate_fps": math.nan},
        {"max_file_bytes": 0},
        {"max_duration_seconds": -1},
        {"max_duration_seconds": math.inf},
        {"max_pixels": 0},
        {"timeout_seconds": 0},
        {"timeout_seconds": math.nan},
        {"seek": "fast"},
        {"keyframe_tolerance": -0.1},
        {"keyframe_tolerance": 0.6},
        {"keyframe_tolerance": math.nan},
        {"index_scan_seconds": 0},
        {"ffmpeg_binary": ""},
        {"ffprobe_binary": "  "},
        {"decoder_threads": 0},
        {"sequential_max_frames": -1},
        {"allowed_formats": ()},
        {"allowed_formats": "mov"},
        {"allowed_formats": ("mov,mp4",)},
    ],
    ids=repr,
)
def test_config_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SamplingConfig(**kwargs)  # type: ignore[arg-type]


def test_sampler_is_a_frame_sampler() -> None:
    assert isinstance(FfmpegSampler(), FrameSampler)


@pytest.mark.parametrize("image_size", [0, -1, 2.5])
def test_rejects_bad_image_size(videos: VideoCache, image_size: object) -> None:
    with pytest.raises(ValueError):
        FfmpegSampler().sample(videos.video(), image_size)  # type: ignore[arg-type]


# --- probing ----------------------------------------------------------------------


def test_probe_h264_mp4(videos: VideoCache) -> None:
    path = videos.video(codec="h264", seconds=2, width=320, height=240, fps=25)
    probe = probe_video(path, SamplingConfig())
    assert "mp4" in probe.container
    assert probe.codec == "h264"
    assert (probe.width, probe.height) == (320, 240)
    assert probe.rotation_degrees == 0
    assert probe.duration_seconds == pytest.approx(2.0, abs=0.05)
    assert probe.frame_rate == pytest.approx(25.0)
    assert probe.frame_count == 50
    assert probe.size_bytes == path.stat().st_size
    assert probe.path == str(path)


def test_probe_webm_without_frame_count(videos: VideoCache) -> None:
    probe = probe_video(videos.video(codec="vp9", seconds=2), SamplingConfig())
    assert "webm" in probe.container
    assert probe.codec == "vp9"
    assert probe.frame_count is None
    assert probe.duration_seconds == pytest.approx(2.0, abs=0.05)


def test_probe_ignores_audio_that_outlasts_the_video(videos: VideoCache) -> None:
    path = videos.video(seconds=2, audio_seconds=4)
    probe = probe_video(path)
    assert probe.duration_seconds == pytest.approx(2.0, abs=0.05)
    result = FfmpegSampler().sample(path, SIZE)
    assert_well_formed(result, 16)
    assert result.timestamps_seconds[-1] > 1.8


def test_probe_portrait(videos: VideoCache) -> None:
    probe = probe_video(videos.video(width=720, height=1280, seconds=1, fps=10))
    assert (probe.width, probe.height, probe.rotation_degrees) == (720, 1280, 0)


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_probe_reports_display_size_and_clockwise_rotation(videos: VideoCache, rotate: int) -> None:
    path = videos.video(width=320, height=180, seconds=1, rotate=rotate)
    ccw = display_rotation_ccw(path)
    assert ccw != 0, "the fixture must carry a display matrix"
    probe = probe_video(path)
    assert probe.rotation_degrees == (-ccw) % 360
    expected = (180, 320) if ccw in (90, 270) else (320, 180)
    assert (probe.width, probe.height) == expected


# --- sampling: formats ----------------------------------------------------------------

FORMATS: dict[str, dict[str, Any]] = {
    "h264-mp4": {"codec": "h264"},
    "h265-mp4": {"codec": "h265"},
    "vp9-webm": {"codec": "vp9"},
    "av1-mkv": {"codec": "av1"},
    "mjpeg-avi": {"codec": "mjpeg"},
    "h264-mov": {"codec": "h264", "container": "mov"},
    "prores-mov": {"codec": "prores"},
    "gif": {"codec": "gif", "fps": 10},
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_samples_every_format(videos: VideoCache, sampler: FfmpegSampler, name: str) -> None:
    options: dict[str, Any] = {"seconds": 3.2, "width": 240, "height": 160, "fps": 25, "source": "testsrc2"}
    options.update(FORMATS[name])
    path = videos.video(**options)
    result = sampler.sample(path, SIZE)

    assert_well_formed(result, 16)
    fps = float(options["fps"])
    assert result.probe.frame_rate == pytest.approx(fps)
    assert_on_frame_grid(result.timestamps_seconds, fps)
    # Frame k is the one on screen at the centre of bin k.
    centres = (np.arange(16) + 0.5) * result.probe.duration_seconds / 16
    assert np.all(result.timestamps_seconds <= centres + 1e-6)
    assert np.all(result.timestamps_seconds > centres - 1.0 / fps - 1e-6)
    # testsrc2 moves: no two sampled frames are the same picture.
    flat = result.frames.reshape(16, -1).astype(np.int16)
    assert np.all(np.abs(np.diff(flat, axis=0)).mean(axis=1) > 1.0)


def test_sequential_and_seek_give_identical_frames(videos: VideoCache) -> None:
    path = videos.video(seconds=4, gop=30)
    one_pass = FfmpegSampler(DECODE_MODES["sequential"]).sample(path, SIZE)
    seeking = FfmpegSampler(DECODE_MODES["seek"]).sample(path, SIZE)
    assert (one_pass.decode_mode, seeking.decode_mode) == ("one_pass", "seek")
    np.testing.assert_array_equal(one_pass.timestamps_seconds, seeking.timestamps_seconds)
    np.testing.assert_array_equal(one_pass.frames, seeking.frames)


def test_short_clip_returns_each_frame_once(videos: VideoCache, sampler: FfmpegSampler) -> None:
    result = sampler.sample(videos.video(frames=3, fps=25), SIZE)
    assert_well_formed(result, 3)
    np.testing.assert_allclose(result.timestamps_seconds, [0.0, 0.04, 0.08], atol=1e-6)
    assert not np.array_equal(result.frames[0], result.frames[1])
    assert not np.array_equal(result.frames[1], result.frames[2])


def test_clip_just_longer_than_request_reaches_the_last_frame(videos: VideoCache, sampler: FfmpegSampler) -> None:
    # 20 frames, 16 wanted: the last bin must land on the last frame, not past it.
    result = sampler.sample(videos.video(frames=20, fps=25), SIZE)
    assert_well_formed(result, 16)
    assert_on_frame_grid(result.timestamps_seconds, 25)
    assert result.timestamps_seconds[-1] == pytest.approx(19 / 25, abs=1e-6)


def test_other_image_sizes(videos: VideoCache) -> None:
    path = videos.video(width=320, height=240)
    assert_well_formed(FfmpegSampler(SamplingConfig(frames=4)).sample(path, 336), 4, size=336)
    assert_well_formed(FfmpegSampler(SamplingConfig(frames=4)).sample(path, 7), 4, size=7)


@pytest.mark.parametrize(("width", "height"), [(333, 197), (197, 333), (720, 1280)])
def test_odd_and_portrait_sizes(videos: VideoCache, sampler: FfmpegSampler, width: int, height: int) -> None:
    path = videos.video(width=width, height=height, seconds=1.2, fps=20)
    result = sampler.sample(path, SIZE)
    assert_well_formed(result, 16)
    assert (result.probe.width, result.probe.height) == (width, height)


def test_portrait_video_is_upright(videos: VideoCache, sampler: FfmpegSampler) -> None:
    bands = Bands(("red", "blue"), vertical=True)  # red on top
    path = videos.video(width=720, height=1280, seconds=1, fps=20, source=bands)
    result = sampler.sample(path, SIZE)
    assert len(result) == 16
    for frame in result.frames:
        seen = sides(frame)
        assert (seen["top"], seen["bottom"]) == ("red", "blue")


def test_4k_video(videos: VideoCache) -> None:
    path = videos.video(width=3840, height=2160, seconds=1, fps=30)
    result = FfmpegSampler().sample(path, SIZE)
    assert_well_formed(result, 16)
    assert (result.probe.width, result.probe.height) == (3840, 2160)


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_rotated_video_comes_out_upright(videos: VideoCache, sampler: FfmpegSampler, rotate: int) -> None:
    # Stored landscape, red on the left, blue on the right, plus a display matrix.
    path = videos.video(width=320, height=180, seconds=1, source=Bands(("red", "blue")), rotate=rotate)
    ccw = display_rotation_ccw(path)
    # Where the stored picture's sides end up once a player applies the matrix.
    stored = np.array([["?", "?", "?"], ["red", "?", "blue"], ["?", "?", "?"]])
    shown = np.rot90(stored, k=ccw // 90)
    expected = {"top": shown[0, 1], "left": shown[1, 0], "right": shown[1, 2], "bottom": shown[2, 1]}
    expected = {side: colour for side, colour in expected.items() if colour != "?"}
    assert len(expected) == 2

    result = sampler.sample(path, SIZE)
    assert len(result) == 16
    for frame in result.frames:
        seen = sides(frame)
        assert {side: seen[side] for side in expected} == expected


def test_resize_shortest_side_then_centre_crop(videos: VideoCache, sampler: FfmpegSampler) -> None:
    # 400x200, four 100-px bands: resizing the short side to 224 and cropping the
    # centre keeps exactly the two green middle bands.  Squashing would not.
    path = videos.video(width=400, height=200, seconds=1, source=Bands(("red", "green", "green", "blue")))
    result = sampler.sample(path, SIZE)
    for frame in result.frames:
        assert colour_of(frame[:, 3:-3]) == "green"
        assert colour_of(frame[:, :8]) == "green"
        assert colour_of(frame[:, -8:]) == "green"


def test_squash_keeps_the_whole_frame(videos: VideoCache, sampler: FfmpegSampler) -> None:
    # SigLIP-style preprocessing: both sides to the model size, nothing cropped away.
    path = videos.video(width=400, height=200, seconds=1, source=Bands(("red", "green", "green", "blue")))
    result = sampler.sample(path, SIZE, resize_mode="squash")
    quarter = SIZE // 4
    for frame in result.frames:
        assert colour_of(frame[:, 3 : quarter - 3]) == "red"
        assert colour_of(frame[:, quarter + 3 : 3 * quarter - 3]) == "green"
        assert colour_of(frame[:, 3 * quarter + 3 : -3]) == "blue"
    with pytest.raises(ValueError, match="resize_mode"):
        sampler.sample(path, SIZE, resize_mode="pad")


def test_frames_follow_the_content_over_time(videos: VideoCache, mode: SamplingConfig) -> None:
    path = videos.video(seconds=4, fps=25, source=("color=red", "color=blue"))
    result = FfmpegSampler(replace(mode, frames=8)).sample(path, SIZE)
    assert_well_formed(result, 8)
    colours = [colour_of(frame) for frame in result.frames]
    assert colours == ["red"] * 4 + ["blue"] * 4
    assert np.all(result.timestamps_seconds[:4] < 2.0)
    assert np.all(result.timestamps_seconds[4:] >= 2.0)


# --- sampling: rate and seek modes ---------------------------------------------------------


def test_rate_fps(videos: VideoCache, mode: SamplingConfig) -> None:
    path = videos.video(seconds=4, fps=25)
    result = FfmpegSampler(replace(mode, rate_fps=2.0)).sample(path, SIZE)
    assert_well_formed(result, 8)
    wanted = np.arange(8) / 2.0
    assert np.all(result.timestamps_seconds <= wanted + 1e-6)
    assert np.all(result.timestamps_seconds > wanted - 1 / 25 - 1e-6)


def test_rate_fps_is_capped_by_max_frames_and_still_covers_the_video(videos: VideoCache) -> None:
    path = videos.video(seconds=4, fps=25)
    result = FfmpegSampler(SamplingConfig(rate_fps=10.0, frames=5, max_frames=5)).sample(path, SIZE)
    assert_well_formed(result, 5)
    assert result.timestamps_seconds[0] < 0.5
    assert result.timestamps_seconds[-1] > 3.0


def test_rate_above_the_frame_rate_gives_no_duplicates(videos: VideoCache) -> None:
    path = videos.video(seconds=1, fps=10)
    result = FfmpegSampler(SamplingConfig(rate_fps=50.0)).sample(path, SIZE)
    assert_well_formed(result, 10)
    np.testing.assert_allclose(result.timestamps_seconds, np.arange(10) / 10, atol=1e-6)


def test_keyframe_seek_returns_keyframes(videos: VideoCache) -> None:
    path = videos.video(seconds=4, fps=25, gop=25)  # a keyframe every second
    config = SamplingConfig(frames=8, seek="keyframe", sequential_max_frames=0)
    result = FfmpegSampler(config).sample(path, SIZE)
    # Two bins per second land on the same keyframe: it is kept once.
    assert_well_formed(result, 4)
    np.testing.assert_allclose(result.timestamps_seconds, [0.0, 1.0, 2.0, 3.0], atol=1e-6)


@pytest.mark.parametrize("mode", ["sequential", "seek"])
def test_skipping_non_reference_frames_moves_each_frame_to_the_next_reference_frame(
    videos: VideoCache, mode: str
) -> None:
    # I B B P B B P ...: with no B-pyramid every B-frame is a non-reference frame.
    fps = 25
    path = videos.video(seconds=2, fps=fps, gop=50, extra_args=("-bf", "2", "-x264-params", "b-pyramid=none"))
    exact = FfmpegSampler(replace(DECODE_MODES[mode], frames=8)).sample(path, SIZE)
    skipping = FfmpegSampler(replace(DECODE_MODES[mode], frames=8, skip_non_reference=True)).sample(path, SIZE)
    assert_well_formed(skipping, 8)
    delay = skipping.timestamps_seconds - exact.timestamps_seconds
    # Each frame is the first reference frame at or after the exact one: at most two B-frames later.
    assert np.all(delay >= -1e-6)
    assert np.all(delay <= 2.0 / fps + 1e-6)
    assert np.any(delay > 0.5 / fps), "some targets land on B-frames, which must have been skipped"
    frame_index = np.rint(skipping.timestamps_seconds * fps).astype(int)
    assert np.all(frame_index % 3 == 0), f"only I- and P-frames (every third) are decoded: {frame_index}"


def test_skipping_non_reference_frames_keeps_every_frame_when_all_are_wanted(videos: VideoCache) -> None:
    path = videos.video(frames=12, fps=25, extra_args=("-bf", "2", "-x264-params", "b-pyramid=none"))
    config = SamplingConfig(frames=12, skip_non_reference=True)
    result = FfmpegSampler(config).sample(path, SIZE)
    assert_well_formed(result, 12)
    np.testing.assert_allclose(result.timestamps_seconds, np.arange(12) / 25, atol=1e-6)


# --- bad inputs -------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError) as excinfo:
        FfmpegSampler().sample(tmp_path / "nope.mp4", SIZE)
    assert_error(excinfo, VideoNotFoundError)
    with pytest.raises(VideoNotFoundError):
        probe_video(tmp_path / "nope.mp4")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(NotAVideoError) as excinfo:
        FfmpegSampler().sample(tmp_path, SIZE)
    assert_error(excinfo, NotAVideoError)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(EmptyFileError) as excinfo:
        FfmpegSampler().sample(make_empty_file(tmp_path / "empty.mp4"), SIZE)
    assert_error(excinfo, EmptyFileError)


@pytest.mark.parametrize("name", ["notes.txt", "notes.mp4", "notes.bin"])
@pytest.mark.parametrize("allowed", ["default", "any"])
def test_text_file_is_not_a_video(tmp_path: Path, name: str, allowed: str) -> None:
    # ffmpeg reads *.txt as ANSI art and *.bin as binary text art: "videos".
    config = SamplingConfig() if allowed == "default" else SamplingConfig(allowed_formats=None)
    with pytest.raises(NotAVideoError) as excinfo:
        FfmpegSampler(config).sample(make_text_file(tmp_path / name), SIZE)
    assert_error(excinfo, NotAVideoError)


def test_container_outside_allowed_formats(videos: VideoCache) -> None:
    config = SamplingConfig(allowed_formats=("matroska",))
    with pytest.raises(NotAVideoError) as excinfo:
        probe_video(videos.video(codec="h264"), config)
    assert_error(excinfo, NotAVideoError)
    assert "mov" in excinfo.value.message


def test_truncated_mp4_without_index(videos: VideoCache, tmp_path: Path) -> None:
    # The index (moov) is written last: an interrupted upload has none.
    truncated = make_truncated_copy(videos.video(seconds=2), tmp_path / "cut.mp4", fraction=0.5)
    with pytest.raises(CorruptVideoError) as excinfo:
        FfmpegSampler().sample(truncated, SIZE)
    assert_error(excinfo, CorruptVideoError)
    assert excinfo.value.message == "the file is truncated or corrupt (ffprobe: moov atom not found)"


@pytest.mark.parametrize(
    ("options", "fraction"),
    [
        ({"faststart": True}, 0.5),  # index first, half the frames missing
        ({"faststart": True}, 0.9),
        ({"codec": "vp9"}, 0.8),
    ],
    ids=["mp4-half", "mp4-90pct", "webm-80pct"],
)
def test_truncated_media_data(
    videos: VideoCache, sampler: FfmpegSampler, tmp_path: Path, options: dict[str, object], fraction: float
) -> None:
    source = videos.video(seconds=4, gop=25, **options)
    truncated = make_truncated_copy(source, tmp_path / f"cut{source.suffix}", fraction=fraction)
    probe_video(truncated)  # the headers still look fine
    with pytest.raises(CorruptVideoError) as excinfo:
        sampler.sample(truncated, SIZE)
    assert_error(excinfo, CorruptVideoError)
    assert "truncated" in excinfo.value.message


def test_audio_only(videos: VideoCache) -> None:
    path = videos.file("audio-only.m4a", make_audio_only)
    with pytest.raises(NoVideoStreamError) as excinfo:
        FfmpegSampler().sample(path, SIZE)
    assert_error(excinfo, NoVideoStreamError)
    assert "audio only" in excinfo.value.message


def test_zero_frame_video_stream(videos: VideoCache) -> None:
    path = videos.file("zero-frames.avi", make_zero_frame_video)
    with pytest.raises(NoVideoStreamError) as excinfo:
        FfmpegSampler().sample(path, SIZE)
    assert_error(excinfo, NoVideoStreamError)
    assert "no frames" in excinfo.value.message


@pytest.mark.parametrize("side", [12000, 100000])
def test_absurd_header_dimensions(tmp_path: Path, side: int) -> None:
    path = make_absurd_dimensions(tmp_path / "huge.y4m", width=side, height=side)
    with pytest.raises(UnsupportedVideoError) as excinfo:
        FfmpegSampler().sample(path, SIZE)
    assert_error(excinfo, UnsupportedVideoError)


def test_max_pixels(videos: VideoCache) -> None:
    path = videos.video(width=320, height=240)
    with pytest.raises(UnsupportedVideoError) as excinfo:
        probe_video(path, SamplingConfig(max_pixels=320 * 240 - 1))
    assert_error(excinfo, UnsupportedVideoError)
    assert probe_video(path, SamplingConfig(max_pixels=320 * 240)).width == 320


def test_file_over_size_limit_is_rejected_before_ffprobe(videos: VideoCache) -> None:
    path = videos.video()
    size = path.stat().st_size
    config = SamplingConfig(max_file_bytes=size - 1, ffprobe_binary="/nonexistent/ffprobe")
    with pytest.raises(VideoTooLargeError) as excinfo:
        FfmpegSampler(config).sample(path, SIZE)
    assert_error(excinfo, VideoTooLargeError)
    assert probe_video(path, SamplingConfig(max_file_bytes=size)).size_bytes == size


def test_video_over_duration_limit(videos: VideoCache) -> None:
    path = videos.video(seconds=2)
    with pytest.raises(VideoTooLargeError) as excinfo:
        FfmpegSampler(SamplingConfig(max_duration_seconds=1.5)).sample(path, SIZE)
    assert_error(excinfo, VideoTooLargeError)
    assert "long" in excinfo.value.message


# --- the ffmpeg installation -------------------------------------------------------------


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _is_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as status:
            return status.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("tool", ["ffprobe", "ffmpeg"])
def test_hanging_tool_times_out_and_is_killed(videos: VideoCache, tmp_path: Path, tool: str) -> None:
    pid_file = tmp_path / "child.pid"
    # The sleep is a grandchild: killing only the shell would leave it running.
    hang = _script(tmp_path / f"fake-{tool}", f"sleep 60 &\necho $! > {pid_file}\nwait\n")
    config = SamplingConfig(timeout_seconds=1, **{f"{tool}_binary": hang})  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(DecodeTimeoutError) as excinfo:
        FfmpegSampler(config).sample(videos.video(), SIZE)
    assert time.monotonic() - started < 10
    assert_error(excinfo, DecodeTimeoutError)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _is_gone(pid), "the tool's child process survived the timeout"


@pytest.mark.parametrize("tool", ["ffprobe", "ffmpeg"])
def test_missing_binary(videos: VideoCache, tmp_path: Path, tool: str) -> None:
    config = SamplingConfig(**{f"{tool}_binary": str(tmp_path / "no-such-binary")})  # type: ignore[arg-type]
    with pytest.raises(FfmpegNotFoundError) as excinfo:
        FfmpegSampler(config).sample(videos.video(), SIZE)
    assert_error(excinfo, FfmpegNotFoundError)
    assert tool in excinfo.value.message


def test_path_like_and_str_paths(videos: VideoCache) -> None:
    path = videos.video()
    by_path = FfmpegSampler().sample(path, 32)
    by_str = FfmpegSampler().sample(os.fspath(path), 32)
    np.testing.assert_array_equal(by_path.frames, by_str.frames)


def test_awkward_file_names(videos: VideoCache, tmp_path: Path) -> None:
    # "http:" or "concat:" in a name must not be read as a protocol.
    for name in ("my vidéo: 100%.mp4", "http:example.mp4", "concat:a.mp4|b.mp4"):
        copy = tmp_path / name
        copy.write_bytes(videos.video().read_bytes())
        assert len(FfmpegSampler(SamplingConfig(frames=4)).sample(copy, 32)) == 4


def test_nvdec_requested_where_it_cannot_run_falls_back_to_the_cpu_with_one_warning(
    videos: VideoCache, caplog: pytest.LogCaptureFixture
) -> None:
    """The check decodes a real clip with ``-hwaccel cuda``; on a host without a usable GPU the
    sampler says why once and decodes exactly what the CPU sampler decodes."""
    check_cuda_decoding.cache_clear()
    with caplog.at_level(logging.INFO, logger="detectors.sampling.hwdecode"):
        nvdec = FfmpegSampler(SamplingConfig(frames=6, hw_decode="cuda"))
        again = FfmpegSampler(SamplingConfig(frames=6, hw_decode="cuda"))
    if nvdec.hw_decode == "cuda":
        pytest.skip("NVDEC works here: tests/detectors/test_gpu.py compares it with the CPU")
    assert again.hw_decode == "none"
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]  # checked once per process
    assert "hw_decode=cuda" in warning.getMessage() and "decoding on the CPU" in warning.getMessage()
    path = videos.video(seconds=2, width=320, height=240)
    cpu = FfmpegSampler(SamplingConfig(frames=6)).sample(path, SIZE)
    fallback = nvdec.sample(path, SIZE)
    np.testing.assert_array_equal(fallback.frames, cpu.frames)
    np.testing.assert_array_equal(fallback.timestamps_seconds, cpu.timestamps_seconds)


def test_nvdec_check_names_an_ffmpeg_without_the_cuda_hwaccel(tmp_path: Path) -> None:
    """Each ffmpeg binary gets its own check (and reason)."""
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\nprintf 'Hardware acceleration methods:\\nvaapi\\n'\n")
    fake.chmod(0o755)
    check = check_cuda_decoding(str(fake))
    assert not check.usable and "without the cuda hwaccel" in check.reason
    missing = check_cuda_decoding(str(tmp_path / "no-such-ffmpeg"))
    assert not missing.usable and "cannot run" in missing.reason
