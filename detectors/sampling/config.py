"""What the sampler may open and how it picks frames: :class:`SamplingConfig` and its limits."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

#: Which frame each wanted time gets; see :class:`SamplingConfig`.
SeekMode = Literal["nearest_keyframe", "accurate", "keyframe"]
SEEK_MODES: tuple[SeekMode, ...] = ("nearest_keyframe", "accurate", "keyframe")

#: Where video is decoded: ``none`` (the CPU) or ``cuda`` (NVDEC through ffmpeg's ``-hwaccel cuda``).
HwDecode = Literal["none", "cuda"]
HW_DECODERS: tuple[HwDecode, ...] = ("none", "cuda")

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
      times, else the frame within the same reach that needs the fewest
      frames decoded forward from the keyframe before it (usually the first
      frame of the time's bin; the frame on screen at the time when the
      tolerance is 0).  A keyframe needs no
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

    ``hw_decode="cuda"`` decodes on an NVIDIA GPU's NVDEC engine (ffmpeg's
    ``-hwaccel cuda``; the frames come back to the CPU for resizing).  The
    sampler checks once, when it is made, that this ffmpeg can decode with it
    on this host, and otherwise decodes on the CPU and says so in one warning
    (:mod:`detectors.sampling.hwdecode`).  Off by default.

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
    hw_decode: HwDecode = "none"

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
        if self.hw_decode not in HW_DECODERS:
            raise ValueError(f"hw_decode must be one of {', '.join(HW_DECODERS)}; got {self.hw_decode!r}")
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
