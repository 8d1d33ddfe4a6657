"""What a file is before anything is decoded: ffprobe's streams and format, checked against
the limits (:func:`probe_video`), and the video packets' times and keyframe flags (the index)."""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from detectors.errors import (
    CorruptVideoError,
    EmptyFileError,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedVideoError,
    VideoError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from detectors.sampling.config import (
    _GIB,
    _MAX_PLAUSIBLE_FPS,
    _NOT_VIDEO_FORMATS,
    _PACKET_ENTRIES,
    _SAME_TIME,
    _TRUNCATION_MARKERS,
    SamplingConfig,
)
from detectors.sampling.process import _file_url, _find_line, _flatten, _input_options, _last_line, _run
from detectors.types import VideoProbe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _ProbeResult:
    probe: VideoProbe
    url: str
    stream_index: int
    #: The video stream's start relative to the container's start, in seconds.
    start_offset_seconds: float
    #: The container's start time: the origin of every reported timestamp.
    container_start_seconds: float
    #: The video stream's packets (the sampler's probe only; ``None`` for :func:`probe_video`).
    index: _PacketIndex | None = None
    #: Frames the decoder may hold back for reordering (ffprobe's ``has_b_frames``).
    reorder_frames: int = 0


def probe_video(path: str | os.PathLike[str], config: SamplingConfig | None = None) -> VideoProbe:
    """Check a file against ``config``'s limits and describe its video stream.

    ``width``/``height`` are the display size (after rotation);
    ``rotation_degrees`` is the clockwise rotation a player applies to show
    the picture upright (0, 90, 180 or 270), read from the display matrix or
    the legacy ``rotate`` tag; ``duration_seconds`` is the video stream's
    length; ``frame_count`` is ``None`` when the container does not record it.

    Raises a :class:`~detectors.errors.VideoError` subclass for bad input,
    :class:`~detectors.errors.FfmpegNotFoundError` when ffprobe is missing.
    """
    return _probe(path, config or SamplingConfig()).probe


@dataclass(frozen=True)
class _PacketIndex:
    """The video stream's packets as the demuxer lists them, nothing decoded.

    ``times`` are the presentation times of the packets read and ``keyframes``
    those flagged as keyframes, both sorted, in seconds from the container's
    start.  ``whole``: every packet of the stream was read; otherwise only
    the start of the video and windows around the wanted times.
    """

    times: tuple[float, ...]
    keyframes: tuple[float, ...]
    whole: bool

    @classmethod
    def from_packets(
        cls, packets: Sequence[Mapping[str, Any]], stream_index: int, container_start: float, *, whole: bool
    ) -> _PacketIndex:
        times: set[float] = set()
        keyframes: set[float] = set()
        for packet in packets:
            if _to_int(packet.get("stream_index", stream_index)) != stream_index:
                continue
            seconds = _to_float(packet.get("pts_time"))
            flags = str(packet.get("flags") or "")
            if seconds is None or "D" in flags:  # no time, or dropped by the demuxer (edit lists)
                continue
            seconds = round(seconds - container_start, 6)
            times.add(seconds)
            if flags.startswith("K"):
                keyframes.add(seconds)
        return cls(tuple(sorted(times)), tuple(sorted(keyframes)), whole)

    def merged(self, other: _PacketIndex) -> _PacketIndex:
        return _PacketIndex(
            tuple(sorted({*self.times, *other.times})),
            tuple(sorted({*self.keyframes, *other.keyframes})),
            self.whole or other.whole,
        )

    def keyframe_at_or_before(self, seconds: float) -> float | None:
        position = bisect.bisect_right(self.keyframes, seconds + _SAME_TIME)
        return self.keyframes[position - 1] if position else None

    def last_at_or_before(self, seconds: float) -> float | None:
        position = bisect.bisect_right(self.times, seconds + _SAME_TIME)
        return self.times[position - 1] if position else None

    def keyframes_near(self, seconds: float, within: float) -> list[float]:
        """Keyframes within ``within`` of ``seconds``, nearest first (earlier first on ties)."""
        low = bisect.bisect_left(self.keyframes, seconds - within - _SAME_TIME)
        high = bisect.bisect_right(self.keyframes, seconds + within + _SAME_TIME)
        return sorted(self.keyframes[low:high], key=lambda k: (abs(k - seconds), k))

    def times_near(self, seconds: float, within: float) -> tuple[float, ...]:
        """Packet times within ``within`` of ``seconds``, in order."""
        low = bisect.bisect_left(self.times, seconds - within - _SAME_TIME)
        return self.times[low : bisect.bisect_right(self.times, seconds + within + _SAME_TIME)]

    def count(self, start: float, end: float) -> int:
        """Packets with a presentation time from ``start`` to ``end``."""
        low = bisect.bisect_left(self.times, start - _SAME_TIME)
        return max(0, bisect.bisect_right(self.times, end + _SAME_TIME) - low)


def _probe(path: str | os.PathLike[str], config: SamplingConfig, *, index_seconds: float | None = None) -> _ProbeResult:
    """``index_seconds``: also list the video packets of the first this-many seconds
    (then only video streams are described)."""
    fs_path = os.fspath(path)
    try:
        st = os.stat(fs_path)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise VideoNotFoundError(f"video file not found: {fs_path}") from e
    except OSError as e:
        raise VideoError(f"cannot access the video file: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise NotAVideoError(f"the path is {kind}, not a video file")
    if st.st_size == 0:
        raise EmptyFileError("the file is empty (0 bytes)")
    if st.st_size > config.max_file_bytes:
        raise VideoTooLargeError(
            f"the file is {_format_bytes(st.st_size)}; the limit is {_format_bytes(config.max_file_bytes)}"
        )

    url = _file_url(fs_path)
    argv = [
        config.ffprobe_binary, "-hide_banner", "-v", "error",
        *_flatten(_input_options(config)),
        "-print_format", "json=compact=1", "-show_format", "-show_streams",
    ]  # fmt: skip
    if index_seconds is not None:
        argv += ["-select_streams", "v", "-show_entries", _PACKET_ENTRIES, "-read_intervals", f"%+{index_seconds:g}"]
    done = _run([*argv, url], timeout_seconds=config.timeout_seconds, tool="ffprobe")
    if done.returncode != 0:
        raise _ffprobe_failure(done.stderr, url, fs_path)
    try:
        data = json.loads(done.stdout.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        raise CorruptVideoError("ffprobe returned unreadable information about the file") from e
    if not isinstance(data, dict):
        raise CorruptVideoError("ffprobe returned unreadable information about the file")

    fmt: dict[str, Any] = data.get("format") or {}
    streams: list[dict[str, Any]] = [s for s in data.get("streams") or [] if isinstance(s, dict)]
    format_name = str(fmt.get("format_name") or "")
    if format_name in _NOT_VIDEO_FORMATS or format_name.endswith("_pipe"):
        raise NotAVideoError(f"the file is not a video (ffmpeg detects {format_name!r})")
    if index_seconds is not None and not any(s.get("codec_type") == "video" for s in streams):
        return _probe(path, config)  # describes the other streams in its error

    video = _pick_video_stream(streams)
    codec = str(video.get("codec_name") or "")
    if not codec:
        raise UnsupportedVideoError("the video codec is not supported by this ffmpeg build")
    stored_width, stored_height = _to_int(video.get("width")), _to_int(video.get("height"))
    if stored_width is None or stored_height is None or stored_width <= 0 or stored_height <= 0:
        raise UnsupportedVideoError(f"the video has an invalid frame size ({video.get('width')}x{video.get('height')})")
    if stored_width * stored_height > config.max_pixels:
        raise UnsupportedVideoError(
            f"the frame size {stored_width}x{stored_height} is too large (limit {config.max_pixels} pixels per frame)"
        )
    rotation = _rotation_clockwise(video)
    width, height = (stored_height, stored_width) if rotation in (90, 270) else (stored_width, stored_height)
    frame_rate = _frame_rate(video)
    stream_index = _to_int(video.get("index"))
    if stream_index is None:
        raise CorruptVideoError("ffprobe returned unreadable information about the file")

    declared_frames = _to_int(video.get("nb_frames"))
    if declared_frames == 0:
        raise NoVideoStreamError("the video stream contains no frames")
    frame_count = declared_frames
    duration = _positive_float(video.get("duration")) or _tag_duration(video) or _positive_float(fmt.get("duration"))
    if duration is None:
        # Nothing in the headers: count packets (demuxing only, no decoding).
        packets = _count_packets(url, stream_index, config)
        if packets == 0:
            raise NoVideoStreamError("the video stream contains no frames")
        if frame_rate <= 0:
            raise UnsupportedVideoError("cannot determine the video's duration or frame rate")
        frame_count, duration = packets, packets / frame_rate
    if duration > config.max_duration_seconds:
        raise VideoTooLargeError(
            f"the video is {_format_duration(duration)} long; the limit is "
            f"{_format_duration(config.max_duration_seconds)}"
        )
    stream_start = _to_float(video.get("start_time"))
    container_start = _to_float(fmt.get("start_time")) or 0.0
    offset = max(0.0, stream_start - container_start) if stream_start is not None else 0.0

    packet_index = None
    if index_seconds is not None:
        low = done.stderr.lower()
        for marker in _TRUNCATION_MARKERS:
            if marker in low:
                detail = _find_line(done.stderr, marker, url)
                raise CorruptVideoError(f"the file is truncated or corrupt (ffprobe: {detail})")
        listed = [p for p in data.get("packets") or [] if isinstance(p, dict)]
        whole = offset + duration <= index_seconds
        packet_index = _PacketIndex.from_packets(listed, stream_index, container_start, whole=whole)

    probe = VideoProbe(
        path=fs_path,
        container=format_name,
        codec=codec,
        width=width,
        height=height,
        rotation_degrees=rotation,
        duration_seconds=duration,
        frame_rate=frame_rate,
        frame_count=frame_count,
        size_bytes=st.st_size,
    )
    logger.debug("probed %s: %s", fs_path, probe)
    return _ProbeResult(
        probe=probe,
        url=url,
        stream_index=stream_index,
        start_offset_seconds=offset,
        container_start_seconds=container_start,
        index=packet_index,
        reorder_frames=max(0, _to_int(video.get("has_b_frames")) or 0),
    )


#: Box types an MP4/MOV file starts with; a "moov atom not found" file that
#: starts with none of them is something else with an .mp4/.mov name.
_ISO_BMFF_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"})


def _starts_like_iso_bmff(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return True  # cannot tell: keep ffprobe's verdict
    return len(head) == 8 and head[4:8] in _ISO_BMFF_FIRST_BOXES


def _ffprobe_failure(stderr: str, url: str, path: str) -> VideoError:
    low = stderr.lower()
    if "moov atom not found" in low and not _starts_like_iso_bmff(path):
        return NotAVideoError(
            "the file is not a video: it is named like an MP4/MOV but has no such structure "
            "(ffprobe: moov atom not found)"
        )
    for needle in ("moov atom not found", "end of file", "truncat"):
        if needle in low:
            detail = _find_line(stderr, needle, url) or needle
            return CorruptVideoError(f"the file is truncated or corrupt (ffprobe: {detail})")
    if "format not on whitelist" in low:
        match = re.search(r"\[([^\]@]+?) @[^\]]*\] Format not on whitelist", stderr)
        name = match.group(1).strip() if match else "unknown"
        return NotAVideoError(f"the file is not in a supported video format (ffmpeg detects {name!r})")
    if "picture size" in low and "invalid" in low:
        detail = _find_line(stderr, "picture size", url) or "invalid picture size"
        return UnsupportedVideoError(f"the frame size is invalid or absurdly large (ffprobe: {detail})")
    if "invalid data found when processing input" in low:
        return NotAVideoError(
            "the file is not a recognised video format (ffprobe: Invalid data found when processing input)"
        )
    if "permission denied" in low:
        return VideoError("the video file cannot be read (permission denied)")
    if "no such file" in low:
        return VideoNotFoundError("video file not found")
    return CorruptVideoError(f"the file could not be read as a video (ffprobe: {_last_line(stderr, url)})")


def _pick_video_stream(streams: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    videos = [
        s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if videos:
        defaults = [s for s in videos if (s.get("disposition") or {}).get("default")]
        return (defaults or videos)[0]
    kinds = sorted({str(s.get("codec_type")) for s in streams})
    if not streams:
        raise NoVideoStreamError("the file contains no streams at all")
    if "audio" in kinds:
        raise NoVideoStreamError("the file has no video stream (audio only)")
    raise NoVideoStreamError(f"the file has no video stream (only {', '.join(kinds)})")


def _count_packets(url: str, stream_index: int, config: SamplingConfig) -> int:
    argv = [
        config.ffprobe_binary, "-hide_banner", "-v", "error",
        *_flatten(_input_options(config)),
        "-count_packets", "-select_streams", str(stream_index),
        "-show_entries", "stream=nb_read_packets", "-print_format", "json", url,
    ]  # fmt: skip
    done = _run(argv, timeout_seconds=config.timeout_seconds, tool="ffprobe")
    if done.returncode != 0:
        raise _ffprobe_failure(done.stderr, url, url.removeprefix("file:"))
    try:
        streams = json.loads(done.stdout.decode("utf-8", errors="replace")).get("streams") or []
    except (json.JSONDecodeError, AttributeError) as e:
        raise CorruptVideoError("ffprobe returned unreadable information about the file") from e
    packets = _to_int(streams[0].get("nb_read_packets")) if streams else None
    return packets or 0


def _rotation_clockwise(stream: Mapping[str, Any]) -> int:
    """Clockwise display rotation, normalised to 0/90/180/270."""
    degrees: float | None = None
    for side in stream.get("side_data_list") or []:
        ccw = _to_float(side.get("rotation")) if isinstance(side, dict) else None
        if ccw is not None:
            degrees = -ccw  # the display matrix angle is counter-clockwise
            break
    if degrees is None:
        degrees = _to_float((stream.get("tags") or {}).get("rotate"))  # legacy tag: clockwise
    if degrees is None:
        return 0
    return round(degrees / 90.0) * 90 % 360


def _frame_rate(stream: Mapping[str, Any]) -> float:
    for key in ("avg_frame_rate", "r_frame_rate"):
        raw = stream.get(key)
        try:
            rate = float(Fraction(str(raw)))
        except (ValueError, ZeroDivisionError):
            continue
        if 0 < rate <= _MAX_PLAUSIBLE_FPS:
            return rate
    return 0.0


def _tag_duration(stream: Mapping[str, Any]) -> float | None:
    """Matroska keeps the per-track length in a ``DURATION`` tag (HH:MM:SS.nnn)."""
    tags = stream.get("tags") or {}
    raw = next((v for k, v in tags.items() if str(k).upper() == "DURATION"), None)
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", str(raw or "").strip())
    if not match:
        return None
    seconds = int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))
    return seconds if seconds > 0 else None


def _to_float(value: object) -> float | None:
    try:
        result = float(str(value))
    except ValueError:
        return None
    return result if math.isfinite(result) else None


def _positive_float(value: object) -> float | None:
    result = _to_float(value)
    return result if result is not None and result > 0 else None


def _to_int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _format_bytes(size: int) -> str:
    for unit, scale in (("GiB", _GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"
