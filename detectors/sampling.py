"""Turn a local video file into a few model-sized RGB frames, with ffmpeg.

1. :func:`probe_video` runs ``ffprobe`` and checks the file against the limits
   in :class:`SamplingConfig` before anything is decoded.  The sampler's own
   probe also lists the video stream's packets (their times and keyframe
   flags, read by the demuxer without decoding anything): the first
   ``SamplingConfig.index_scan_seconds`` in the same ffprobe call, and for a
   longer video a window around each wanted time in a second one.
2. A *plan* says which frame each wanted time gets and how it is decoded
   (:class:`SamplingConfig` ``seek``):

   * ``"nearest_keyframe"`` (default): the nearest keyframe when one lies
     within the tolerance, decoded alone (``-skip_frame nokey``: the decoder
     skips every other frame); otherwise the exact frame, decoded forward from
     the keyframe before it.
   * ``"accurate"``: the frame on screen at each time, decoded forward from the
     keyframe before it.
   * ``"keyframe"``: the keyframe at or before each time (repeats dropped).

   Then a cost model, in decoded frames, picks how: one pass from the start
   (every frame up to the last wanted one), or one input per wanted frame,
   each seeking to its keyframe, plus, for keyframes, possibly one input that
   decodes only keyframes from the start.  All inputs of a plan run in one
   ffmpeg process (up to ``seeks_per_process`` inputs each).
3. Every frame is rotated upright (ffmpeg's autorotate), resized so its
   shortest side is the model's input size (bicubic) and centre-cropped to a
   square - the geometry of open_clip's default preprocessing - and written
   as raw RGB24 to a pipe.  A named ``showinfo`` filter per branch reports
   which branch produced a frame and that frame's exact timestamp; the count
   is checked, and the frames ffmpeg's decoders produced (its own statistics,
   ``-loglevel verbose``) are counted in :attr:`SampledFrames.frames_decoded`.

Each ffmpeg/ffprobe runs with a timeout in its own process group, killed as
a whole when it overruns.  Failures are mapped onto :mod:`detectors.errors`
with messages written for a moderator; command lines are logged at DEBUG.

Known ffmpeg behaviour the plan accounts for (measured with ffmpeg 5.1): a
decoder hands over a frame only once it has seen as many later frames as the
stream may reorder (``has_b_frames``; ``-flags low_delay`` does not change
that).  With ``-skip_frame nokey`` the later frames it waits for are the next
*keyframes*, so an input that seeks to one keyframe of a stream with
B-frames decodes three keyframes and reads the packets of two GOPs.  Such a
stream's keyframe is therefore reached by a plain (non-accurate) seek
instead: the keyframe plus the two or so frames after it are decoded, which
costs about two thirds as much (8 keyframes of a 720p video: 0.35 s of CPU
against 0.63 s).  ``-skip_frame nokey`` is used where it decodes keyframes
alone: streams without B-frames, and the keyframes-only pass from the start
(there only the two keyframes after the last wanted one are extra).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any, Literal

import ffmpeg  # ffmpeg-python: only builds argv; we run it with a timeout
import numpy as np
import numpy.typing as npt

from detectors.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    EmptyFileError,
    FfmpegNotFoundError,
    MotionGuardError,
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedVideoError,
    VideoError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from detectors.types import SampledFrames, UInt8Array, VideoProbe

__all__ = [
    "DEFAULT_ALLOWED_FORMATS",
    "SEEK_MODES",
    "DecodeMode",
    "FfmpegSampler",
    "SamplingConfig",
    "SeekMode",
    "frames_decoded",
    "probe_video",
]

logger = logging.getLogger(__name__)

#: Which frame each wanted time gets; see :class:`SamplingConfig`.
SeekMode = Literal["nearest_keyframe", "accurate", "keyframe"]
SEEK_MODES: tuple[SeekMode, ...] = ("nearest_keyframe", "accurate", "keyframe")

#: Demuxers (ffmpeg's names) that may open an uploaded file.  Restricting them
#: keeps text files (the ``tty`` demuxer reads ``.txt`` as ANSI art), images and
#: playlists (HLS/concat files that make ffmpeg open other files) out.
DEFAULT_ALLOWED_FORMATS: tuple[str, ...] = (
    "mov",  # also mp4, m4v, 3gp
    "matroska",  # also webm
    "avi",
    "gif",
    "apng",
    "mpegts",
    "mpeg",
    "flv",
    "asf",
    "ogg",
    "mxf",
    "nut",
    "ivf",
    "yuv4mpegpipe",
    "dv",
)

_SCALE_FLAGS = "bicubic+accurate_rnd+full_chroma_int"
_BRANCH_TAG = "mgframe"
#: Demuxers that read still images or text (ANSI/binary text art): never a
#: video, even when ``allowed_formats`` is ``None``.
_NOT_VIDEO_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf", "image2", "image2pipe", "lavfi"})
#: What demuxers print when a file ends before its index says it should.
_TRUNCATION_MARKERS = ("partial file", "file ended prematurely")
_MAX_PLAUSIBLE_FPS = 1000.0
#: Decoders whose ``skip_frame=noref`` drops only frames nothing refers to.
_SKIPPABLE_CODECS = frozenset({"h264", "hevc"})
_GIB = 1024**3
_PACKET_ENTRIES = "packet=stream_index,pts_time,flags"
#: Two times closer than this are the same (ffprobe prints times to the microsecond).
_SAME_TIME = 1e-5


@dataclass(frozen=True)
class SamplingConfig:
    """How many frames to take, where, and the limits an input must respect.

    ``frames`` wanted times are spread over the video (centres of equal
    bins).  With ``rate_fps`` set, one time every ``1 / rate_fps`` seconds
    from the start instead; if that would exceed ``max_frames``, ``max_frames``
    times are spread over the whole video (the effective rate drops) so long
    videos are still covered end to end.  ``max_frames`` bounds both modes.

    ``seek`` chooses the frame each wanted time gets:

    * ``"nearest_keyframe"`` (default): the keyframe nearest to the time when
      it lies within ``keyframe_tolerance`` x the spacing between wanted
      times, else the frame on screen at the time.  A keyframe needs no
      frame before it, so this costs a fraction of exact sampling (it is
      decoded alone, or with the two or so frames after it that a decoder of
      a stream with B-frames reads before handing over the first).
      Keyframes (I-frames) are the best-quality pictures of a stream, and
      each frame still comes from its own part of the video;
      ``evaluate --frame-seek accurate`` measures any difference on your data.
    * ``"accurate"``: the frame on screen at each time (decoded forward from
      the keyframe before it).
    * ``"keyframe"``: the keyframe at or before each time, however far; repeats
      are dropped, so fewer frames may come back.

    ``keyframe_tolerance`` is a fraction of the spacing between wanted times
    (the bin width), from 0 to 0.5.  The default 0.5 accepts any keyframe in
    the wanted time's own bin: every frame still represents its share of the
    video, frames stay in order and no two wanted times can share a keyframe.
    0 asks for exact frames unless a keyframe is exactly on time.  With
    ``rate_fps`` the spacing is ``1 / rate_fps`` (or the bin width when
    ``max_frames`` caps it).

    Whether the frames are decoded in one pass from the start or with one
    seek per frame is chosen per video by a cost model that counts the frames
    each way decodes (from the packet index) plus a measured cost per seek.
    ``sequential_max_frames`` caps the one-pass way: ``None`` (default) leaves
    it to the cost model, ``0`` always seeks.  Each seek is a separate input
    of one ffmpeg process, up to ``seeks_per_process`` per process: every
    input keeps its own decoder (about 20 MiB at 720p, 70 MiB at 4K with two
    threads) until the process ends, so this bounds memory.
    ``decoder_threads`` is per decoder.

    ``index_scan_seconds``: the packet index (times and keyframe flags, read
    without decoding) is read whole for the first this-many seconds of the
    video, in the probe's own ffprobe call; a longer video's index is read
    only around each wanted time, in a second call, so the cost of the index
    does not grow with the length.

    ``skip_non_reference=True`` lets the H.264 and H.265 decoders skip the
    frames that no other frame refers to (``-skip_frame noref``) whenever not
    every frame is wanted: about a third less decoding for streams with
    B-frames.  Each exact frame is then the first *reference* frame at or
    after its time (usually one to three frames later; timestamps stay
    truthful).  Off by default, so that an exact frame is the one on screen.

    ``timeout_seconds`` applies to each ffprobe/ffmpeg process separately; a
    sample runs one or two ffprobes and usually one ffmpeg (rarely one more).
    ``allowed_formats`` lists the ffmpeg demuxers a file may be opened with
    (``None`` allows all of them - not advisable for untrusted uploads).
    """

    frames: int = 16
    rate_fps: float | None = None
    max_frames: int = 64
    max_file_bytes: int = 4 * _GIB
    max_duration_seconds: float = 4 * 3600.0
    max_pixels: int = 8192 * 8192
    timeout_seconds: float = 60.0
    seek: SeekMode = "nearest_keyframe"
    keyframe_tolerance: float = 0.5
    ffmpeg_binary: str = "ffmpeg"
    ffprobe_binary: str = "ffprobe"
    decoder_threads: int = 2
    sequential_max_frames: int | None = None
    seeks_per_process: int = 8
    index_scan_seconds: float = 60.0
    allowed_formats: tuple[str, ...] | None = DEFAULT_ALLOWED_FORMATS
    skip_non_reference: bool = False

    def __post_init__(self) -> None:
        positive = (
            "frames", "max_frames", "max_file_bytes", "max_pixels", "decoder_threads", "seeks_per_process",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.sequential_max_frames is not None and (
            isinstance(self.sequential_max_frames, bool)
            or not isinstance(self.sequential_max_frames, int)
            or self.sequential_max_frames < 0
        ):
            raise ValueError(
                f"sequential_max_frames must be None or an integer >= 0, got {self.sequential_max_frames!r}"
            )
        if self.frames > self.max_frames:
            raise ValueError(f"frames ({self.frames}) must not exceed max_frames ({self.max_frames})")
        for name in ("max_duration_seconds", "timeout_seconds", "index_scan_seconds"):
            _require_positive_number(name, getattr(self, name))
        if self.rate_fps is not None:
            _require_positive_number("rate_fps", self.rate_fps)
        if not isinstance(self.skip_non_reference, bool):
            raise ValueError(f"skip_non_reference must be a bool, got {self.skip_non_reference!r}")
        if self.seek not in SEEK_MODES:
            raise ValueError(f"seek must be one of {', '.join(SEEK_MODES)}; got {self.seek!r}")
        tolerance = self.keyframe_tolerance
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, (int, float))
            or not math.isfinite(tolerance)
            or not 0 <= tolerance <= 0.5
        ):
            raise ValueError(f"keyframe_tolerance must be a number from 0 to 0.5, got {tolerance!r}")
        for name in ("ffmpeg_binary", "ffprobe_binary"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.allowed_formats is not None:
            if isinstance(self.allowed_formats, str) or not self.allowed_formats:
                raise ValueError("allowed_formats must be a non-empty tuple of demuxer names or None")
            for name in self.allowed_formats:
                if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                    raise ValueError(f"invalid demuxer name in allowed_formats: {name!r}")


def _require_positive_number(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


# --- running ffmpeg/ffprobe -------------------------------------------------------------


@dataclass(frozen=True)
class _Completed:
    returncode: int
    stdout: bytes
    stderr: str


def _run(argv: Sequence[str], *, timeout_seconds: float, tool: str) -> _Completed:
    """Run ``argv`` in its own process group; kill the whole group on timeout."""
    logger.debug("running %s", " ".join(argv))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise FfmpegNotFoundError(
            f"the {tool} program was not found ({argv[0]!r}); install ffmpeg or set SamplingConfig.{tool}_binary"
        ) from e
    except OSError as e:
        raise FfmpegNotFoundError(f"the {tool} program {argv[0]!r} cannot be run: {e.strerror}") from e
    try:
        stdout, stderr = proc.communicate(timeout=timeout_seconds)
    except subprocess.TimeoutExpired as e:
        _kill_process_group(proc)
        raise DecodeTimeoutError(
            f"{tool} did not finish within {timeout_seconds:g} s and was stopped "
            "(the file may be malformed or too expensive to decode)"
        ) from e
    except BaseException:
        _kill_process_group(proc)
        raise
    logger.debug("%s exited with %d after %.3f s", tool, proc.returncode, time.monotonic() - started)
    return _Completed(proc.returncode, stdout, stderr.decode("utf-8", errors="replace"))


def _kill_process_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _file_url(path: str) -> str:
    # The explicit protocol stops ffmpeg from reading "http:..." or "concat:..."
    # in a file name as a protocol.
    return "file:" + os.path.abspath(path)


def _input_options(config: SamplingConfig) -> dict[str, str]:
    options = {"protocol_whitelist": "file"}
    if config.allowed_formats is not None:
        options["format_whitelist"] = ",".join(config.allowed_formats)
    return options


_LOG_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")


def _clean_line(line: str, url: str) -> str:
    line = _LOG_PREFIX.sub("", line.strip())
    line = line.replace(f"{url}: ", "").replace(url, "<file>")
    return line[:200]


def _find_line(stderr: str, needle: str, url: str) -> str | None:
    for line in stderr.splitlines():
        if needle in line.lower():
            return _clean_line(line, url)
    return None


def _last_line(stderr: str, url: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return _clean_line(lines[-1], url) if lines else "no error message"


# --- probing ----------------------------------------------------------------------


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


def _flatten(options: Mapping[str, str]) -> list[str]:
    return [part for key, value in options.items() for part in (f"-{key}", value)]


# --- sampling ---------------------------------------------------------------------


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
    (decoded alone), else the frame on screen at that time; ``seek="accurate"``
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

    def __init__(self, config: SamplingConfig = SamplingConfig()) -> None:
        self.config = config

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


def _exact_target(info: _ProbeResult, wanted: float) -> _Target:
    """The frame on screen at ``wanted`` (seconds from the container's start): the
    last packet at or before it in the index, else computed from the frame rate."""
    fps, estimate = _frame_rate_and_count(info.probe)
    index = info.index
    if index is not None:
        frame = index.last_at_or_before(wanted)
        if frame is not None:
            return _Target(wanted, round(max(0.0, frame - _SAME_TIME * 10), 6), keyframe=False)
    t = wanted - info.start_offset_seconds
    if fps > 0 and estimate:
        # A quarter frame before the frame's start, so that "first frame at or after" lands on it.
        number = min(math.floor(t * fps + 1e-6), estimate - 1)
        return _Target(wanted, round(info.start_offset_seconds + max(0.0, (number - 0.25) / fps), 6), keyframe=False)
    return _Target(wanted, round(info.start_offset_seconds + min(t, info.probe.duration_seconds * 0.99), 6), False)


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
