"""Which frame each wanted time gets, and how it is decoded: one pass or one seek per frame,
chosen by counting the frames each way decodes (see the package's notes)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from detectors.sampling.config import _SAME_TIME, SamplingConfig
from detectors.sampling.probe import _PacketIndex, _ProbeResult
from detectors.types import VideoProbe

#: How a plan decodes.  ``all``: every frame (the video has no more than are wanted);
#: ``one_pass``: one pass from the start, keeping the first frame at or after each target;
#: ``seek``: one input per target, seeking to its keyframe, plus at most one input that
#: decodes only keyframes from the start.
DecodeMode = Literal["all", "one_pass", "seek"]

# The cost model, in decoded P/B-frames of 720p H.264 (about 2.7 ms of CPU each with
# ffmpeg 5.1 on the 2-core benchmark machine).  Measured with `ffmpeg -benchmark`-style
# CPU times of the child processes: one input seeking to a keyframe and decoding it
# costs about 0.03 s, of which decoding the I-frame is about 6 ms; decoding forward
# 30 frames from a keyframe about 0.07 s more; the whole 10-s video 0.8 s.
_INPUT_COST = 8.0  # opening one more input: seek, stream info, decoder and filter set-up
_KEYFRAME_COST = 2.0  # an I-frame is about twice the work of a P-frame
#: Without a packet index the cost of a seek is unknown: one pass up to this many frames.
_UNINDEXED_ONE_PASS_FRAMES = 600


@dataclass(frozen=True)
class _Target:
    """One wanted time and the frame planned for it, in seconds from the container's start.

    ``keyframe``: ``seconds`` is a keyframe's time, decoded alone.  Otherwise
    ``seconds`` is a quarter frame before the frame on screen at ``wanted``, so
    that "the first frame at or after" lands on that frame despite rounding.
    """

    wanted: float
    seconds: float
    keyframe: bool


@dataclass(frozen=True)
class _Plan:
    """What to decode for one video (see :data:`DecodeMode`).

    ``keyframe_pass``: in ``seek`` mode, the keyframe targets share one input that
    decodes only keyframes from the start (cheaper than one seek each when the
    video has few keyframes before the last one wanted).  ``quarter_frame``:
    a quarter of a frame's duration, the margin used to find a frame by its
    time.  ``estimated_cost``: the cost model's figure, in decoded frames.
    """

    mode: DecodeMode
    targets: tuple[_Target, ...]
    frame_limit: int
    keyframe_pass: bool = False
    quarter_frame: float = 1e-3
    estimated_cost: float = 0.0


def _wanted_times(probe: VideoProbe, config: SamplingConfig) -> tuple[list[float], float]:
    """The wanted times (seconds from the video stream's start) and their spacing."""
    duration = probe.duration_seconds
    if config.rate_fps is not None and duration * config.rate_fps <= config.max_frames:
        wanted = max(1, math.ceil(duration * config.rate_fps - 1e-9))
        return [k / config.rate_fps for k in range(wanted)], 1.0 / config.rate_fps
    wanted = config.max_frames if config.rate_fps is not None else config.frames
    return [(k + 0.5) * duration / wanted for k in range(wanted)], duration / wanted


def _frame_rate_and_count(probe: VideoProbe) -> tuple[float, int | None]:
    fps = probe.frame_rate
    if fps <= 0 and probe.frame_count:
        fps = probe.frame_count / probe.duration_seconds
    estimate = probe.frame_count or (round(probe.duration_seconds * fps) if fps > 0 else None)
    return fps, estimate


def _plan(info: _ProbeResult, config: SamplingConfig) -> _Plan:
    probe = info.probe
    times, spacing = _wanted_times(probe, config)
    fps, estimate = _frame_rate_and_count(probe)
    if estimate is not None and estimate <= len(times):
        return _Plan(mode="all", targets=(), frame_limit=len(times))
    quarter = 0.25 / fps if fps > 0 else 1e-3

    index = info.index
    tolerance = config.keyframe_tolerance * spacing
    targets: list[_Target] = []
    taken: set[float] = set()
    for t in times:
        wanted = round(info.start_offset_seconds + t, 6)
        if config.seek == "nearest_keyframe" and index is not None:
            near = [k for k in index.keyframes_near(wanted, tolerance) if k not in taken]
            if near:
                taken.add(near[0])
                targets.append(_Target(wanted, near[0], keyframe=True))
                continue
            cheapest = _cheapest_frame_near(index, wanted, tolerance, exclude=taken)
            if cheapest is not None:
                taken.add(cheapest)
                targets.append(_frame_target(wanted, cheapest))
                continue
        exact = _exact_target(info, wanted)
        if all(target.keyframe or target.seconds != exact.seconds for target in targets):
            targets.append(exact)
    targets.sort(key=lambda target: target.seconds)
    if config.seek == "keyframe":
        return _Plan(mode="seek", targets=tuple(targets), frame_limit=len(times), quarter_frame=quarter)

    last = targets[-1].seconds
    if index is None:
        one_pass_frames = estimate if estimate is not None else math.inf
        one_pass = one_pass_frames <= _UNINDEXED_ONE_PASS_FRAMES
        mode: DecodeMode = "one_pass" if one_pass else "seek"
        return _Plan(mode=mode, targets=tuple(targets), frame_limit=len(times), quarter_frame=quarter)

    one_pass_frames = float(index.count(-math.inf, last) if index.whole else last * max(fps, 1.0))
    one_pass_cost = _INPUT_COST + one_pass_frames + info.reorder_frames
    seek_cost = 0.0
    keyframe_seek_cost = 0.0
    keyframe_targets = [target for target in targets if target.keyframe]
    for target in targets:
        if target.keyframe:
            # Without reordering ffmpeg still reads one more keyframe from an input before it
            # moves on to the next; with it, the frames a decoder reads ahead are decoded.
            extra = info.reorder_frames or _KEYFRAME_COST
            keyframe_seek_cost += _INPUT_COST + _KEYFRAME_COST + extra
            continue
        before = index.keyframe_at_or_before(target.seconds)
        forward = index.count(before, target.seconds) if before is not None else target.seconds * max(fps, 1.0)
        seek_cost += _INPUT_COST + _KEYFRAME_COST + forward + info.reorder_frames
    keyframe_pass = False
    if keyframe_targets:
        last_keyframe = keyframe_targets[-1].seconds
        if index.whole:
            passed = sum(1 for k in index.keyframes if k <= last_keyframe + _SAME_TIME) + info.reorder_frames
            keyframe_pass_cost = _INPUT_COST + _KEYFRAME_COST * passed
            keyframe_pass = keyframe_pass_cost < keyframe_seek_cost
            seek_cost += min(keyframe_pass_cost, keyframe_seek_cost)
        else:
            seek_cost += keyframe_seek_cost
    cap = config.sequential_max_frames
    allowed = cap is None or (estimate is not None and estimate <= cap)
    if allowed and one_pass_cost <= seek_cost:
        return _Plan("one_pass", tuple(targets), len(times), quarter_frame=quarter, estimated_cost=one_pass_cost)
    return _Plan(
        "seek", tuple(targets), len(times), keyframe_pass=keyframe_pass, quarter_frame=quarter, estimated_cost=seek_cost
    )


def _cheapest_frame_near(index: _PacketIndex, wanted: float, within: float, *, exclude: set[float]) -> float | None:
    """The frame within ``within`` of ``wanted`` that costs the fewest decoded frames
    (counted forward from the keyframe before it), nearest to ``wanted`` among equals;
    ``None`` when the index has no frame there or its keyframes lie before what was read.

    With no keyframe in the window, this is the first frame of the window, unless
    a keyframe inside the window was taken by the neighbouring time: then the frame
    right after it.
    """
    if within <= 0:
        return None
    best: tuple[float, float, float] | None = None
    for seconds in index.times_near(wanted, within):
        if seconds in exclude:
            continue
        before = index.keyframe_at_or_before(seconds)
        if before is None and not index.whole:
            continue  # the keyframe before is outside what was read: cost unknown
        cost = index.count(before if before is not None else -math.inf, seconds)
        key = (float(cost), abs(seconds - wanted), seconds)
        if best is None or key < best:
            best = key
    return best[2] if best is not None else None


def _frame_target(wanted: float, frame: float) -> _Target:
    """A non-keyframe target for the index's frame at ``frame`` (a hair before it, so that
    "the first frame at or after" lands on it)."""
    return _Target(wanted, round(max(0.0, frame - _SAME_TIME * 10), 6), keyframe=False)


def _exact_target(info: _ProbeResult, wanted: float) -> _Target:
    """The frame on screen at ``wanted`` (seconds from the container's start): the
    last packet at or before it in the index, else computed from the frame rate."""
    fps, estimate = _frame_rate_and_count(info.probe)
    index = info.index
    if index is not None:
        frame = index.last_at_or_before(wanted)
        if frame is not None:
            return _frame_target(wanted, frame)
    t = wanted - info.start_offset_seconds
    if fps > 0 and estimate:
        # A quarter frame before the frame's start, so that "first frame at or after" lands on it.
        number = min(math.floor(t * fps + 1e-6), estimate - 1)
        return _Target(wanted, round(info.start_offset_seconds + max(0.0, (number - 0.25) / fps), 6), keyframe=False)
    return _Target(wanted, round(info.start_offset_seconds + min(t, info.probe.duration_seconds * 0.99), 6), False)
