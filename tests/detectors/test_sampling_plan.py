"""The keyframe-aware sampling plan (the default) against files with known keyframes.

The truth comes from the files themselves: ``packet_times`` lists every
packet's time and keyframe flag with ffprobe, independently of the sampler.
Decoding cost is checked with ffmpeg's own count of the frames its decoders
produced (``frames_decoded``), so a plan that quietly decodes everything fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.errors import CorruptVideoError
from detectors.sampling import FfmpegSampler, SamplingConfig, frames_decoded
from detectors.types import SampledFrames
from tests.detectors.test_sampling import assert_error, sides
from tests.videofactory import (
    Bands,
    VideoCache,
    display_rotation_ccw,
    make_truncated_copy,
    make_vfr_video,
    packet_times,
)

SIZE = 32
#: x264 with keyframes exactly every ``-g`` frames (no scene cuts, no shorter GOPs).
FIXED_GOP = ("-sc_threshold", "0")
B_FRAMES = ("-bf", "2", "-x264-params", "b-pyramid=none")


def wanted_times(duration: float, n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) * duration / n


def cheapest_near(
    times: list[float], keyframes: list[float], w: float, limit: float, taken: set[float]
) -> float | None:
    """The frame within ``limit`` of ``w`` that needs the fewest frames decoded from the
    keyframe before it (nearest to ``w`` among equals), counted from the file's packets."""
    costs = []
    for frame in times:
        if abs(frame - w) > limit + 1e-6 or any(abs(frame - t) < 1e-3 for t in taken):
            continue
        before = max(k for k in keyframes if k <= frame + 1e-6)
        costs.append((sum(1 for t in times if before - 1e-6 <= t <= frame + 1e-6), abs(frame - w), frame))
    return min(costs)[2] if costs and limit > 0 else None


def check_plan(path: Path, result: SampledFrames, n: int, tolerance: float = 0.5) -> list[bool]:
    """Each frame is the nearest unused keyframe within the tolerance, else the frame in
    the tolerance that is cheapest to decode forward from its keyframe (the frame on
    screen at its wanted time when the tolerance is 0); returns which frames are keyframes."""
    times, keyframes = packet_times(path)
    duration = result.probe.duration_seconds
    wanted = wanted_times(duration, n)
    limit = tolerance * duration / n
    got = result.timestamps_seconds
    assert len(got) == n, got
    assert np.all(np.diff(got) > 0)
    is_key = []
    taken: set[float] = set()
    for t, w in zip(got, wanted, strict=True):
        assert any(abs(t - frame) < 1e-3 for frame in times), f"{t} is not a frame of the file"
        key = any(abs(t - k) < 1e-3 for k in keyframes)
        near = sorted((abs(k - w), k) for k in keyframes if abs(k - w) <= limit + 1e-6 and k not in taken)
        if near:  # the nearest keyframe that no earlier wanted time took
            taken.add(near[0][1])
            assert key and t == pytest.approx(near[0][1], abs=1e-3), (t, w, near)
        else:
            cheapest = cheapest_near(times, keyframes, w, limit, taken)
            if cheapest is None:  # the frame on screen at w: the last frame at or before it
                cheapest = max(frame for frame in times if frame <= w + 1e-6)
            assert t == pytest.approx(cheapest, abs=1e-3), (t, w)
            taken.add(cheapest)
        is_key.append(key)
    return is_key


# --- choosing frames ------------------------------------------------------------------------


def test_picks_keyframes_within_the_tolerance_and_decodes_forward_otherwise(videos: VideoCache) -> None:
    # Keyframes at 0, 2, 4, 6, 8 s; 8 wanted times 1.25 s apart, tolerance 0.625 s.
    path = videos.video(seconds=10, fps=25, gop=50, extra_args=FIXED_GOP)
    result = FfmpegSampler(SamplingConfig(frames=8)).sample(path, SIZE)
    is_key = check_plan(path, result, 8)
    assert is_key.count(True) == 5 and is_key.count(False) == 3
    np.testing.assert_allclose(result.timestamps_seconds[np.array(is_key)], [0, 2, 4, 6, 8], atol=1e-6)
    # The other three are the first frames of their windows (2.5, 6.25 and 8.75 s),
    # decoded forward from the keyframes at 2, 6 and 8 s: 13 + 7 + 19 frames, where
    # the frames on screen at 3.125, 6.875 and 9.375 s would need 28 + 22 + 34.
    np.testing.assert_allclose(result.timestamps_seconds[~np.array(is_key)], [2.52, 6.28, 8.76], atol=1e-6)
    assert result.frames_decoded is not None and result.frames_decoded <= 5 + 13 + 7 + 19 + 3 * 3


@pytest.mark.parametrize("tolerance", [0.0, 0.1, 0.25, 0.5])
@pytest.mark.parametrize("gop", [10, 25, 60])
def test_no_frame_is_further_than_the_tolerance(videos: VideoCache, tolerance: float, gop: int) -> None:
    path = videos.video(seconds=6, fps=25, gop=gop, extra_args=FIXED_GOP)
    result = FfmpegSampler(SamplingConfig(frames=8, keyframe_tolerance=tolerance)).sample(path, SIZE)
    check_plan(path, result, 8, tolerance)
    spacing = result.probe.duration_seconds / 8
    distance = np.abs(result.timestamps_seconds - wanted_times(result.probe.duration_seconds, 8))
    assert np.all(distance <= max(tolerance * spacing, 1 / 25) + 1e-6)


def test_exact_mode_is_kept(videos: VideoCache) -> None:
    path = videos.video(seconds=10, fps=25, gop=50, extra_args=FIXED_GOP)
    result = FfmpegSampler(SamplingConfig(frames=8, seek="accurate")).sample(path, SIZE)
    check_plan(path, result, 8, tolerance=0.0)
    np.testing.assert_allclose(result.timestamps_seconds, np.floor(wanted_times(10, 8) * 25) / 25, atol=1e-6)


@pytest.mark.parametrize(
    "extra", [B_FRAMES, ("-bf", "3", "-x264-params", "open-gop=1"), ()], ids=["b-frames", "open-gop", "no-b-frames"]
)
def test_gop_structures(videos: VideoCache, extra: tuple[str, ...]) -> None:
    path = videos.video(seconds=8, fps=25, gop=40, extra_args=(*FIXED_GOP, *extra))
    for config in (SamplingConfig(frames=8), SamplingConfig(frames=8, sequential_max_frames=0)):
        result = FfmpegSampler(config).sample(path, SIZE)
        check_plan(path, result, 8)
        flat = result.frames.reshape(8, -1).astype(np.int16)
        assert np.all(np.abs(np.diff(flat, axis=0)).mean(axis=1) > 1.0), "every frame is a distinct picture"


def test_variable_frame_rate(videos: VideoCache) -> None:
    path = videos.file("vfr.mp4", make_vfr_video)
    result = FfmpegSampler(SamplingConfig(frames=8)).sample(path, SIZE)
    check_plan(path, result, 8)


def test_a_single_keyframe(videos: VideoCache) -> None:
    path = videos.video(seconds=4, fps=25, gop=1000, extra_args=FIXED_GOP)
    assert packet_times(path)[1] == [0.0]
    result = FfmpegSampler(SamplingConfig(frames=8)).sample(path, SIZE)
    is_key = check_plan(path, result, 8)
    assert is_key == [True] + [False] * 7  # 0.25 s from the first wanted time, at the tolerance


@pytest.mark.parametrize("rotate", [90, 270])
def test_rotated_keyframes_come_out_upright(videos: VideoCache, rotate: int) -> None:
    path = videos.video(
        width=320, height=180, seconds=4, gop=25, source=Bands(("red", "blue")), rotate=rotate, extra_args=FIXED_GOP
    )
    ccw = display_rotation_ccw(path)
    stored = np.array([["?", "?", "?"], ["red", "?", "blue"], ["?", "?", "?"]])
    shown = np.rot90(stored, k=ccw // 90)
    expected = {"top": shown[0, 1], "bottom": shown[2, 1]}
    result = FfmpegSampler(SamplingConfig(frames=4)).sample(path, 64)
    assert check_plan(path, result, 4) == [True] * 4
    for frame in result.frames:
        seen = sides(frame)
        assert {side: seen[side] for side in expected} == expected


def test_index_read_in_windows_gives_the_same_frames(videos: VideoCache) -> None:
    # A video longer than the index scan: the packets around each wanted time are read.
    path = videos.video(seconds=10, fps=25, gop=50, extra_args=FIXED_GOP)
    whole = FfmpegSampler(SamplingConfig(frames=8)).sample(path, SIZE)
    windows = FfmpegSampler(SamplingConfig(frames=8, index_scan_seconds=1.0)).sample(path, SIZE)
    np.testing.assert_array_equal(whole.timestamps_seconds, windows.timestamps_seconds)
    np.testing.assert_array_equal(whole.frames, windows.frames)


# --- what is decoded ------------------------------------------------------------------------


def test_frames_decoded_reads_ffmpegs_statistics() -> None:
    log = (
        "Input file #0 (file:a.mp4):\n"
        "  Input stream #0:0 (video): 102 packets read (374063 bytes); 2 frames decoded; \n"
        "  Input stream #0:1 (audio): 40 packets read (4000 bytes); 40 frames decoded (40960 samples); \n"
        "Input file #1 (file:a.mp4):\n"
        "  Input stream #1:0 (video): 29 packets read (106231 bytes); 27 frames decoded; \n"
    )
    assert frames_decoded(log) == 29
    assert frames_decoded("nothing here") is None


@pytest.mark.parametrize("seconds", [4, 20])
def test_keyframe_only_decoding_decodes_only_keyframes(videos: VideoCache, seconds: int) -> None:
    # A keyframe every 0.4 s, one within the tolerance of each wanted time: nothing but
    # keyframes needs decoding.
    path = videos.video(seconds=seconds, fps=25, gop=10, extra_args=FIXED_GOP)
    times, keyframes = packet_times(path)
    assert (len(times), len(keyframes)) == (25 * seconds, 2.5 * seconds)
    result = FfmpegSampler(SamplingConfig(frames=4)).sample(path, SIZE)
    assert check_plan(path, result, 4) == [True] * 4
    assert result.decode_mode == "seek"
    assert result.frames_decoded is not None
    if seconds == 20:
        # One seek per keyframe, decoding keyframes only (-skip_frame nokey): its own, and
        # at most one more that ffmpeg reads before it moves on to the next input.
        assert len(result) <= result.frames_decoded <= 2 * len(result)
    else:  # one keyframes-only pass from the start (cheaper than 4 seeks for 10 keyframes)
        assert len(result) <= result.frames_decoded <= len(keyframes)


def test_keyframe_only_decoding_with_b_frames(videos: VideoCache) -> None:
    path = videos.video(seconds=4, fps=25, gop=10, extra_args=(*FIXED_GOP, *B_FRAMES))
    times, keyframes = packet_times(path)
    result = FfmpegSampler(SamplingConfig(frames=4)).sample(path, SIZE)
    assert check_plan(path, result, 4) == [True] * 4
    assert result.frames_decoded is not None
    # Keyframes only (the pass), or each keyframe plus the frames the decoder reads ahead
    # before handing it over (seeks): never the 100 frames of the file.
    assert result.frames_decoded <= len(keyframes) + 2 * len(result) < len(times) / 2


def test_exact_frames_decode_more_than_keyframes(videos: VideoCache) -> None:
    path = videos.video(seconds=4, fps=25, gop=10, extra_args=FIXED_GOP)
    nearest = FfmpegSampler(SamplingConfig(frames=4)).sample(path, SIZE)
    exact = FfmpegSampler(SamplingConfig(frames=4, seek="accurate")).sample(path, SIZE)
    assert nearest.frames_decoded is not None and exact.frames_decoded is not None
    assert exact.frames_decoded > nearest.frames_decoded


def test_the_cost_model_chooses_one_pass_or_seeks(videos: VideoCache) -> None:
    # Exact frames: a short video with long GOPs is cheaper in one pass; a long one with
    # short GOPs is cheaper with one seek per frame.
    short = videos.video(seconds=3, fps=25, gop=75, extra_args=FIXED_GOP)
    long = videos.video(seconds=60, fps=10, gop=10, width=64, height=48, extra_args=FIXED_GOP)
    config = SamplingConfig(frames=4, seek="accurate")
    one_pass = FfmpegSampler(config).sample(short, SIZE)
    seeking = FfmpegSampler(config).sample(long, SIZE)
    assert (one_pass.decode_mode, seeking.decode_mode) == ("one_pass", "seek")
    assert seeking.frames_decoded is not None and seeking.frames_decoded < 60  # of 600 frames


# --- bad input, with the default plan ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fraction"),
    [({"faststart": True}, 0.5), ({"faststart": True}, 0.9), ({"codec": "vp9"}, 0.8)],
    ids=["mp4-half", "mp4-90pct", "webm-80pct"],
)
def test_truncated_media_data(videos: VideoCache, tmp_path: Path, options: dict[str, Any], fraction: float) -> None:
    source = videos.video(seconds=4, gop=25, **options)
    truncated = make_truncated_copy(source, tmp_path / f"cut{source.suffix}", fraction=fraction)
    with pytest.raises(CorruptVideoError) as excinfo:
        FfmpegSampler().sample(truncated, SIZE)
    assert_error(excinfo, CorruptVideoError)
    assert "truncated" in excinfo.value.message
