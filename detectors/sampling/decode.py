"""Decoding a plan with ffmpeg: one process for all of a plan's inputs, frames resized and
cropped like open_clip's preprocessing, each frame's timestamp read from ``showinfo``."""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import ffmpeg  # ffmpeg-python: only builds argv; we run it with a timeout
import numpy as np
import numpy.typing as npt

from detectors.errors import (
    CorruptVideoError,
    FfmpegNotFoundError,
    MotionGuardError,
)
from detectors.sampling.config import (
    _BRANCH_TAG,
    _PACKET_ENTRIES,
    _SCALE_FLAGS,
    _SKIPPABLE_CODECS,
    _TRUNCATION_MARKERS,
    SamplingConfig,
)
from detectors.sampling.hwdecode import resolve_hw_decode
from detectors.sampling.plan import _exact_target, _Plan, _plan, _Target, _wanted_times
from detectors.sampling.probe import _ffprobe_failure, _PacketIndex, _probe, _ProbeResult
from detectors.sampling.process import _clean_line, _Completed, _find_line, _flatten, _input_options, _last_line, _run
from detectors.types import SampledFrames, UInt8Array

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Geometry:
    """open_clip's default: shortest side to ``size`` (bicubic), centre crop."""

    scaled_width: int
    scaled_height: int
    crop_x: int
    crop_y: int
    size: int

    @classmethod
    def for_display(cls, width: int, height: int, size: int, resize_mode: str = "shortest") -> _Geometry:
        if resize_mode == "squash":
            # open_clip's "squash": both sides to ``size``, aspect ratio not kept (SigLIP).
            return cls(size, size, 0, 0, size)
        if resize_mode != "shortest":
            raise ValueError(f"resize_mode must be 'shortest' or 'squash', got {resize_mode!r}")
        # Same arithmetic as torchvision's Resize(int) and CenterCrop.
        if width <= height:
            scaled_width, scaled_height = size, int(size * height / width)
        else:
            scaled_width, scaled_height = int(size * width / height), size
        crop_x = round((scaled_width - size) / 2.0)
        crop_y = round((scaled_height - size) / 2.0)
        return cls(scaled_width, scaled_height, crop_x, crop_y, size)

    @property
    def frame_bytes(self) -> int:
        return self.size * self.size * 3


@dataclass(frozen=True)
class _Frame:
    seconds: float  # from the container's start
    pixels: UInt8Array


@dataclass
class _Tally:
    """Frames decoded by the ffmpeg processes of one sample (ffmpeg's own count)."""

    frames_decoded: int | None = 0

    def add(self, count: int | None) -> None:
        self.frames_decoded = None if count is None or self.frames_decoded is None else self.frames_decoded + count


class FfmpegSampler:
    """:class:`~detectors.types.FrameSampler` backed by the ffmpeg CLI.

    ``sample(path, image_size)`` returns ``(n, image_size, image_size, 3)``
    ``uint8`` RGB frames, upright, resized and centre-cropped like open_clip's
    default preprocessing (``resize_mode="shortest"``; ``"squash"`` resizes
    both sides to ``image_size`` like SigLIP's), in temporal order, each frame
    at most once.

    Where frames are taken: ``config.frames`` times at the centres of equal
    bins over the video (or every ``1 / rate_fps`` s), and for each time, by
    default, the nearest keyframe within ``config.keyframe_tolerance`` bins
    (decoded alone), else the frame within the tolerance that is cheapest to
    decode forward from its keyframe (the frame on screen at that time when the
    tolerance is 0 or the index has no frame there); ``seek="accurate"``
    always takes the frame on screen, ``seek="keyframe"`` the keyframe at or
    before the time.  No frame is further from its wanted time than the
    tolerance, except that an exact frame is the one on screen at that time.
    ``timestamps_seconds[i]`` is the presentation time of frame ``i`` as
    decoded, in seconds from the start of the file (the container's start
    time subtracted) - the truth, not the time that was asked for - and
    ``frames_decoded`` what ffmpeg's decoders produced to get them.

    Videos with no more frames than requested are decoded whole and every
    frame is returned once, so ``n`` can be smaller than requested; it can
    also be smaller when keyframe seeking lands on one keyframe twice.
    Whether a video is decoded in one pass or with one seek per frame is
    chosen by counting the frames each way decodes.
    """

    def __init__(self, config: SamplingConfig | None = None) -> None:
        self.config = config if config is not None else SamplingConfig()
        #: ``cuda`` when ``config.hw_decode`` asked for it and this host can do it, else ``none``.
        self.hw_decode = resolve_hw_decode(self.config.hw_decode, self.config.ffmpeg_binary)

    def sample(self, path: str | os.PathLike[str], image_size: int, resize_mode: str = "shortest") -> SampledFrames:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if resize_mode not in ("shortest", "squash"):
            raise ValueError(f"resize_mode must be 'shortest' or 'squash', got {resize_mode!r}")
        config = self.config
        index_seconds = None if config.seek == "keyframe" else config.index_scan_seconds
        info = _probe(path, config, index_seconds=index_seconds)
        info = self._index_windows(info)
        geometry = _Geometry.for_display(info.probe.width, info.probe.height, image_size, resize_mode)
        plan = _plan(info, config)
        tally = _Tally()
        started = time.monotonic()
        if plan.mode == "all":
            frames = self._decode_sequential(info, geometry, (), plan.frame_limit, tally)
            if not frames:
                raise CorruptVideoError("no frame could be decoded from the video")
        else:
            frames = self._decode_targets(info, geometry, plan, tally)
        pixels, timestamps = _assemble(frames, geometry, info.container_start_seconds)
        logger.debug(
            "sampled %d frames (%s, %d keyframes, estimated cost %.0f frames, %s decoded) from %s in %.3f s",
            len(pixels), plan.mode, sum(t.keyframe for t in plan.targets), plan.estimated_cost,
            tally.frames_decoded, info.probe.path, time.monotonic() - started,
        )  # fmt: skip
        return SampledFrames(
            frames=pixels,
            timestamps_seconds=timestamps,
            probe=info.probe,
            frames_decoded=tally.frames_decoded,
            decode_mode=plan.mode,
        )

    def _index_windows(self, info: _ProbeResult) -> _ProbeResult:
        """For a video longer than the index scan, read the packets around each wanted time."""
        index = info.index
        if index is None or index.whole:
            return info
        config = self.config
        times, spacing = _wanted_times(info.probe, config)
        scanned = index.times[-1] if index.times else 0.0
        radius = 0.0
        if config.seek == "nearest_keyframe":
            radius = min(config.keyframe_tolerance * spacing, config.index_scan_seconds / (2 * len(times)))
        base = info.container_start_seconds
        windows = []
        for t in times:
            wanted = info.start_offset_seconds + t
            if wanted + radius > scanned:
                low = max(0.0, wanted - radius)
                windows.append(f"{base + low:.6f}%{base + wanted + radius + 1e-3:.6f}")
        if not windows:
            return info
        argv = [
            config.ffprobe_binary, "-hide_banner", "-v", "error",
            *_flatten(_input_options(config)),
            "-select_streams", str(info.stream_index), "-show_entries", _PACKET_ENTRIES,
            "-read_intervals", ",".join(windows), "-print_format", "json=compact=1", info.url,
        ]  # fmt: skip
        done = _run(argv, timeout_seconds=config.timeout_seconds, tool="ffprobe")
        if done.returncode != 0:
            raise _ffprobe_failure(done.stderr, info.url, info.probe.path)
        try:
            data = json.loads(done.stdout.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as e:
            raise CorruptVideoError("ffprobe returned unreadable information about the file") from e
        packets = [p for p in (data.get("packets") if isinstance(data, dict) else None) or [] if isinstance(p, dict)]
        more = _PacketIndex.from_packets(packets, info.stream_index, base, whole=False)
        return replace(info, index=index.merged(more))

    def _decode_targets(self, info: _ProbeResult, geometry: _Geometry, plan: _Plan, tally: _Tally) -> list[_Frame]:
        config = self.config
        base = info.container_start_seconds
        if plan.mode == "one_pass":
            selects = [t.seconds - plan.quarter_frame if t.keyframe else t.seconds for t in plan.targets]
            frames = self._decode_sequential(info, geometry, selects, len(plan.targets), tally)
            found = _match_first_at_or_after(frames, [base + s for s in selects])
        else:
            found = self._decode_seeks(info, geometry, plan, tally)
            frames = list({id(frame): frame for frame in found.values()}.values())
        # A keyframe target must come back as that keyframe (the index may be wrong
        # about a file); anything else is decoded again, exactly.
        redo = [
            i
            for i, target in enumerate(plan.targets)
            if target.keyframe and (i not in found or abs(found[i].seconds - (base + target.seconds)) > 1e-3)
        ]
        if redo:
            logger.debug("keyframes not where the index put them (%s); decoding those frames exactly", redo)
            bad = {id(found[i]) for i in redo if i in found}
            frames = [frame for frame in frames if id(frame) not in bad]
            exact = [_exact_target(info, plan.targets[i].wanted) for i in redo]
            again = self._decode_seeks(info, geometry, replace(plan, targets=tuple(exact), keyframe_pass=False), tally)
            frames += again.values()
            for position, i in enumerate(redo):
                if position in again:
                    found[i] = again[position]
                else:
                    found.pop(i, None)
        missing = [t.seconds for i, t in enumerate(plan.targets) if i not in found]
        if missing and config.seek != "keyframe":
            # Nothing at or after these times: the headers overstate the length, or
            # the file is cut short.  The keyframe before is the best there is.
            logger.debug("no frame at %s s; retrying with keyframe seeks", missing)
            fallback = tuple(_Target(t, t, keyframe=False) for t in missing)
            again = self._decode_seeks(info, geometry, replace(plan, targets=fallback), tally, accurate=False)
            frames += again.values()
            missing = [t for i, t in enumerate(missing) if i not in again]
        if missing:
            where = missing[0] - info.start_offset_seconds
            raise CorruptVideoError(
                f"the file is truncated or corrupt: no frame could be decoded at "
                f"{where:.2f} s of {info.probe.duration_seconds:.2f} s"
            )
        return frames

    def _decode_seeks(
        self, info: _ProbeResult, geometry: _Geometry, plan: _Plan, tally: _Tally, *, accurate: bool | None = None
    ) -> dict[int, _Frame]:
        """The plan's targets, as inputs of at most ``seeks_per_process`` per ffmpeg:
        one seek per target (the keyframe targets, with ``plan.keyframe_pass``, in
        one keyframes-only input); frames by target index."""
        accurate = self.config.seek != "keyframe" if accurate is None else accurate
        base = info.container_start_seconds
        branches: list[tuple[Any, list[int]]] = []
        targets = plan.targets
        if plan.keyframe_pass:
            keyed = [i for i, target in enumerate(targets) if target.keyframe]
            if keyed:
                branches.append((self._keyframe_pass(info, [targets[i].seconds for i in keyed], plan), keyed))
        for i, target in enumerate(targets):
            if plan.keyframe_pass and target.keyframe:
                continue
            branches.append((self._seek(info, target, plan, accurate=accurate), [i]))
        found: dict[int, _Frame] = {}
        step = self.config.seeks_per_process
        for first in range(0, len(branches), step):
            batch = branches[first : first + step]
            streams = [_to_model_input(stream, geometry, b) for b, (stream, _) in enumerate(batch)]
            joined = ffmpeg.concat(*streams, v=1, a=0) if len(streams) > 1 else streams[0]
            limit = sum(len(wanted) for _, wanted in batch)
            reports = self._run(joined, geometry, limit, info.url, tally)
            for b, (_, wanted) in enumerate(batch):
                frames = [frame for branch, frame in reports if branch == b]
                if len(wanted) == 1:
                    if frames:
                        found[wanted[0]] = frames[0]
                    continue
                for i in wanted:  # the keyframe pass: match its frames by time
                    at = base + targets[i].seconds
                    match = [f for f in frames if abs(f.seconds - at) <= plan.quarter_frame]
                    if match:
                        found[i] = match[0]
        return found

    def _seek(self, info: _ProbeResult, target: _Target, plan: _Plan, *, accurate: bool) -> Any:
        """One input that seeks for ``target`` and yields one frame: a keyframe decoded
        alone, or the first frame at or after ``target.seconds``."""
        if target.keyframe:
            # Land on the keyframe itself (seeking goes to the keyframe at or before) and
            # keep the first frame decoded.  Decode only keyframes where that decodes the
            # keyframe alone (no reordering; see the module's notes).
            ss = f"{target.seconds + plan.quarter_frame:.6f}"
            options = self._input_options(info, skip=info.reorder_frames > 0, ss=ss, noaccurate_seek=None)
            if info.reorder_frames == 0:
                # One thread: a frame-threaded decoder would decode the next keyframe too.
                options.update(skip_frame="nokey", threads=1)
        else:
            options = self._input_options(info, skip=True, ss=f"{target.seconds:.6f}")
            if not accurate:
                options["noaccurate_seek"] = None
        stream = ffmpeg.input(info.url, **options)[str(info.stream_index)]
        return stream.filter("trim", end_frame=1)

    def _keyframe_pass(self, info: _ProbeResult, seconds: Sequence[float], plan: _Plan) -> Any:
        """One input from the start that decodes only keyframes and keeps those at ``seconds``."""
        options = self._input_options(info, skip=False)
        options["skip_frame"] = "nokey"
        stream = ffmpeg.input(info.url, **options)[str(info.stream_index)]
        base, margin = info.container_start_seconds, plan.quarter_frame
        terms = "+".join(f"between(t,{base + s - margin:.6f},{base + s + margin:.6f})" for s in seconds)
        return stream.filter("select", f"gt({terms},0)").filter("trim", end_frame=len(seconds))

    def _decode_sequential(
        self, info: _ProbeResult, geometry: _Geometry, targets: Sequence[float], frame_limit: int, tally: _Tally
    ) -> list[_Frame]:
        """One pass from the start: every frame (no targets) or the first frame at
        or after each target."""
        options = self._input_options(info, skip=bool(targets))
        stream = ffmpeg.input(info.url, **options)[str(info.stream_index)]
        if targets:
            base = info.container_start_seconds
            terms = "+".join(f"gte(t,{base + t:.6f})*(isnan(prev_t)+lt(prev_t,{base + t:.6f}))" for t in targets)
            stream = stream.filter("select", f"gt({terms},0)")
        reports = self._run(_to_model_input(stream, geometry, 0), geometry, frame_limit, info.url, tally)
        return [frame for _, frame in reports]

    def _input_options(self, info: _ProbeResult, *, skip: bool, **extra: Any) -> dict[str, Any]:
        """``skip``: not every frame is wanted, so non-reference frames may be skipped."""
        options = {**_input_options(self.config), "threads": self.config.decoder_threads, **extra}
        if skip and self.config.skip_non_reference and info.probe.codec in _SKIPPABLE_CODECS:
            options["skip_frame"] = "noref"
        if self.hw_decode == "cuda":
            # Decoded on NVDEC, copied back to system memory for the filters; codecs NVDEC
            # cannot decode fall back to ffmpeg's software decoders by themselves.
            options["hwaccel"] = "cuda"
        return options

    def _run(
        self, stream: Any, geometry: _Geometry, frame_limit: int, url: str, tally: _Tally
    ) -> list[tuple[int, _Frame]]:
        output = ffmpeg.output(
            stream,
            "pipe:1",
            format="rawvideo",
            pix_fmt="rgb24",
            fps_mode="passthrough",  # never duplicate or drop frames (ffmpeg >= 5.1)
            **{"frames:v": frame_limit},
        )
        cmd = [
            self.config.ffmpeg_binary, "-hide_banner", "-nostdin", "-nostats",
            "-loglevel", "verbose",  # showinfo reports at INFO; the decoders' frame counts at VERBOSE
            "-copyts",  # keep the file's own timestamps, reported by showinfo
            "-filter_complex_threads", "1",
        ]  # fmt: skip
        argv: list[str] = output.compile(cmd=cmd)
        done = _run(argv, timeout_seconds=self.config.timeout_seconds, tool="ffmpeg")
        if done.returncode != 0:
            raise _ffmpeg_failure(done.stderr, url)
        tally.add(frames_decoded(done.stderr))
        low = done.stderr.lower()
        for marker in _TRUNCATION_MARKERS:
            if marker in low:
                detail = _find_line(done.stderr, marker, url)
                raise CorruptVideoError(f"the file is truncated or corrupt (ffmpeg: {detail})")
        return _parse_output(done, geometry, frame_limit)


def _match_first_at_or_after(frames: Sequence[_Frame], seconds: Sequence[float]) -> dict[int, _Frame]:
    """For each time, the first frame at or after it (frames sorted by time)."""
    ordered = sorted(frames, key=lambda frame: frame.seconds)
    times = [frame.seconds for frame in ordered]
    found: dict[int, _Frame] = {}
    for i, at in enumerate(seconds):
        position = bisect.bisect_left(times, at - 1e-6)
        if position < len(ordered):
            found[i] = ordered[position]
    return found


_DECODED = re.compile(r"Input stream #\d+:\d+ \(video\): \d+ packets read \(\d+ bytes\); (\d+) frames decoded")


def frames_decoded(ffmpeg_log: str) -> int | None:
    """Video frames decoded, summed over the inputs, from ffmpeg's own end-of-run
    statistics (printed at ``-loglevel verbose``); ``None`` when it printed none.

    A frame the decoder skipped (``-skip_frame``) is not counted: it was never
    decoded.
    """
    counts = [int(m.group(1)) for m in _DECODED.finditer(ffmpeg_log)]
    return sum(counts) if counts else None


def _to_model_input(stream: Any, geometry: _Geometry, branch: int) -> Any:
    return (
        stream.filter("scale", geometry.scaled_width, geometry.scaled_height, flags=_SCALE_FLAGS)
        .filter("format", "rgb24")
        .filter("crop", geometry.size, geometry.size, geometry.crop_x, geometry.crop_y)
        .filter(f"showinfo@{_BRANCH_TAG}{branch}")
    )


_SHOWINFO_FRAME = re.compile(rf"\[showinfo@{_BRANCH_TAG}(\d+) @ [^\]]+\] n:\s*(\d+) pts:\s*(-?\d+) pts_time:(\S+)")
_SHOWINFO_TIME_BASE = re.compile(rf"\[showinfo@{_BRANCH_TAG}(\d+) @ [^\]]+\] config in time_base: (\d+)/(\d+)")
_INCOMPATIBLE_FFMPEG = (
    "unrecognized option",
    "option not found",
    "no such filter",
    "error splitting the argument list",
)


def _ffmpeg_failure(stderr: str, url: str) -> MotionGuardError:
    low = stderr.lower()
    for needle in _INCOMPATIBLE_FFMPEG:
        if needle in low:
            detail = _find_line(stderr, needle, url)
            return FfmpegNotFoundError(f"the installed ffmpeg is not compatible (needs >= 5.1): {detail}")
    errors = [
        line for line in stderr.splitlines() if any(word in line.lower() for word in ("error", "invalid", "corrupt"))
    ]
    detail = _clean_line(errors[-1], url) if errors else _last_line(stderr, url)
    return CorruptVideoError(f"the video could not be decoded (ffmpeg: {detail})")


def _parse_output(done: _Completed, geometry: _Geometry, frame_limit: int) -> list[tuple[int, _Frame]]:
    """Pair the raw frames on stdout with showinfo's reports on stderr."""
    time_bases = {
        int(m.group(1)): Fraction(int(m.group(2)), int(m.group(3)))
        for m in _SHOWINFO_TIME_BASE.finditer(done.stderr)
        if int(m.group(3)) != 0
    }
    reports: list[tuple[int, float]] = []
    for m in _SHOWINFO_FRAME.finditer(done.stderr):
        branch, pts = int(m.group(1)), int(m.group(3))
        base = time_bases.get(branch)
        reports.append((branch, float(pts * base) if base is not None else float(m.group(4))))
    # concat emits whole branches in order, and a branch's frames in order, but
    # the branches' log lines may interleave: sort by branch (stable).
    reports.sort(key=lambda report: report[0])
    count, remainder = divmod(len(done.stdout), geometry.frame_bytes)
    if remainder:
        raise CorruptVideoError("ffmpeg stopped in the middle of a frame")
    if count == frame_limit < len(reports):
        # Frames filtered while ffmpeg was stopping at -frames:v never reached stdout.
        del reports[count:]
    if count != len(reports):
        raise FfmpegNotFoundError(
            f"ffmpeg's output is not understood ({count} frames but {len(reports)} frame reports); is it ffmpeg >= 5.1?"
        )
    pixels = np.frombuffer(done.stdout, dtype=np.uint8).reshape(count, geometry.size, geometry.size, 3)
    return [(branch, _Frame(seconds, pixels[i])) for i, (branch, seconds) in enumerate(reports)]


def _assemble(
    frames: Sequence[_Frame], geometry: _Geometry, container_start_seconds: float
) -> tuple[UInt8Array, npt.NDArray[np.float64]]:
    """Temporal order; a frame reached from two targets is kept once."""
    kept: list[_Frame] = []
    for frame in sorted(frames, key=lambda f: f.seconds):
        if not kept or frame.seconds - kept[-1].seconds > 1e-6:
            kept.append(frame)
    if not kept:
        empty = np.zeros((0, geometry.size, geometry.size, 3), dtype=np.uint8)
        return empty, np.zeros(0, dtype=np.float64)
    pixels = np.stack([frame.pixels for frame in kept])
    timestamps = np.array([max(0.0, frame.seconds - container_start_seconds) for frame in kept], dtype=np.float64)
    return pixels, timestamps
