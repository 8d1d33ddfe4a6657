"""Make small test videos (and broken files) with the real ``ffmpeg`` CLI.

Everything here shells out to ``ffmpeg``/``ffprobe`` so the fixtures are real
files in real containers, exactly what the sampler sees in production.  Keep
them small: the CI machine has two cores.

Typical use (see ``tests/conftest.py`` for the cached session fixture)::

    make_video(tmp / "a.mp4", codec="h264", seconds=2, width=320, height=240)
    make_video(tmp / "rb.mp4", source=("color=red", "color=blue"))   # red, then blue
    make_video(tmp / "lr.mp4", source=Bands(("red", "blue")))          # red | blue
    make_video(tmp / "p.mp4", rotate=90)                                # display matrix

A *source* is either a lavfi source spec such as ``"testsrc2"``,
``"mandelbrot"``, ``"smptebars"`` or ``"color=red"`` (size and rate are
appended), or a :class:`Bands` pattern of solid colour stripes.  A sequence of
sources is played one after the other, each for an equal share of the length.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Codec = Literal["h264", "h265", "vp9", "av1", "mjpeg", "mpeg4", "prores", "gif"]

#: Encoder arguments per codec, tuned for speed (test fixtures, not quality).
_ENCODERS: dict[str, str] = {
    "h264": "-c:v libx264 -preset ultrafast",
    "h265": "-c:v libx265 -preset ultrafast -x265-params log-level=error -tag:v hvc1",
    "vp9": "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 0 -crf 40 -row-mt 1",
    "av1": "-c:v libsvtav1 -preset 12",
    "mjpeg": "-c:v mjpeg -q:v 4",
    "mpeg4": "-c:v mpeg4 -q:v 4",
    "prores": "-c:v prores_ks -profile:v 0",
    "gif": "-c:v gif",
}
_DEFAULT_CONTAINER: dict[str, str] = {
    "h264": "mp4",
    "h265": "mp4",
    "vp9": "webm",
    "av1": "mkv",
    "mjpeg": "avi",
    "mpeg4": "avi",
    "prores": "mov",
    "gif": "gif",
}
_DEFAULT_PIX_FMT: dict[str, str | None] = {
    "h264": "yuv420p",
    "h265": "yuv420p",
    "vp9": "yuv420p",
    "av1": "yuv420p",
    "mjpeg": "yuvj420p",
    "mpeg4": "yuv420p",
    "prores": "yuv422p10le",
    "gif": None,
}
#: Encoders that cannot store odd widths/heights in 4:2:0 and need 4:4:4 then.
_ODD_SIZE_PIX_FMT: dict[str, str] = {"h264": "yuv444p", "h265": "yuv444p"}
_EXACT_SIZE_FORMAT = "format=yuv444p"
_AUDIO_ENCODER: dict[str, str] = {
    "mp4": "aac",
    "mov": "aac",
    "mkv": "libopus",
    "webm": "libopus",
    "avi": "pcm_s16le",
}


@dataclass(frozen=True)
class Bands:
    """Solid colour stripes of equal size, left to right (or top to bottom).

    ``Bands(("red", "blue"))`` is a frame whose left half is red and right half
    blue: handy to check orientation (rotation) and cropping.
    """

    colours: tuple[str, ...]
    vertical: bool = False

    def lavfi(self, width: int, height: int, fps: float) -> str:
        n = len(self.colours)
        if n == 0:
            raise ValueError("Bands needs at least one colour")
        total = height if self.vertical else width
        sizes = [total // n] * n
        sizes[-1] += total - sum(sizes)
        parts = []
        for i, (colour, size) in enumerate(zip(self.colours, sizes, strict=True)):
            w, h = (width, size) if self.vertical else (size, height)
            parts.append(f"color=c={colour}:s={w}x{h}:r={fps}[b{i}]")
        stack = "vstack" if self.vertical else "hstack"
        labels = "".join(f"[b{i}]" for i in range(n))
        if n == 1:
            return f"color=c={self.colours[0]}:s={width}x{height}:r={fps},{_EXACT_SIZE_FORMAT}[out0]"
        return ";".join(parts) + f";{labels}{stack}=inputs={n},{_EXACT_SIZE_FORMAT}[out0]"


Source = str | Bands


def _lavfi_spec(source: Source, width: int, height: int, fps: float) -> str:
    if isinstance(source, Bands):
        return source.lavfi(width, height, fps)
    # Some generators (testsrc2, mandelbrot ...) only make even sizes: render one
    # pixel larger where needed and crop to the exact (possibly odd) size.  The
    # final 4:4:4 format stops the lavfi device from rounding odd sizes down.
    even_w, even_h = width + width % 2, height + height % 2
    separator = ":" if "=" in source else "="
    spec = f"{source}{separator}s={even_w}x{even_h}:r={fps}"
    if (even_w, even_h) != (width, height):
        spec += f",crop={width}:{height}:0:0"
    return spec + f",{_EXACT_SIZE_FORMAT}"


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _run_ffmpeg(args: Sequence[str], timeout_seconds: float = 1800) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_seconds, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")


def ffprobe_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Raw ``ffprobe -show_format -show_streams`` output, for assertions in tests."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", os.fspath(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def packet_times(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """``(frame times, keyframe times)`` of the first video stream, sorted, from its
    packets as ffprobe lists them (nothing decoded): the truth for the tests."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags",
         "-of", "json", os.fspath(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    packets = json.loads(done.stdout)["packets"]
    times = sorted(float(p["pts_time"]) for p in packets)
    keyframes = sorted(float(p["pts_time"]) for p in packets if p["flags"].startswith("K"))
    return times, keyframes


def make_vfr_video(path: str | os.PathLike[str], *, gop: int = 20) -> Path:
    """A 4-second H.264 MP4 with a variable frame rate: 25 fps for 2 s, then 5 fps."""
    out = Path(path)
    setpts = "if(lt(N,50),N/25,2+(N-50)/5)/TB"
    _run_ffmpeg(
        ["-f", "lavfi", "-i", "testsrc2=s=160x120:r=25", "-frames:v", "60", "-vf", f"setpts='{setpts}'",
         "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop),
         "-f", "mp4", str(out)]
    )  # fmt: skip
    return out


def display_rotation_ccw(path: str | os.PathLike[str]) -> int:
    """Counter-clockwise rotation in ffprobe's display matrix (0 when there is none)."""
    for stream in ffprobe_json(path)["streams"]:
        if stream.get("codec_type") != "video":
            continue
        for side in stream.get("side_data_list", []):
            if "rotation" in side:
                return round(float(side["rotation"])) % 360
    return 0


def make_video(
    path: str | os.PathLike[str],
    *,
    codec: Codec = "h264",
    container: str | None = None,
    seconds: float = 2.0,
    frames: int | None = None,
    width: int = 160,
    height: int = 120,
    fps: float = 25.0,
    source: Source | Sequence[Source] = "testsrc2",
    rotate: int | None = None,
    pix_fmt: str | None = None,
    gop: int | None = None,
    preset: str | None = None,
    audio_seconds: float | None = None,
    faststart: bool = False,
    extra_args: Sequence[str] = (),
) -> Path:
    """Encode a synthetic video and return its path.

    ``frames`` (exact frame count) wins over ``seconds``.  ``source`` may be a
    sequence: the parts are concatenated in time with equal lengths, e.g.
    ``("color=red", "color=blue")`` is red for the first half, blue after.

    ``rotate`` is written as the container's ``rotate`` tag by a stream copy
    (only MP4/MOV), which is how ffmpeg 5.1 produces a display matrix.  Note
    that ffmpeg 5.1 stores ``rotate=N`` as a matrix that ffprobe reports as
    ``rotation: N`` (counter-clockwise); use :func:`display_rotation_ccw` to
    read what was actually written instead of assuming a direction.

    ``gop`` sets the keyframe interval; ``preset`` overrides the encoder's
    (fast) default preset, e.g. ``"veryfast"`` for realistic x264 files; ``audio_seconds`` adds a sine tone of
    that length (it may be longer than the video); ``faststart`` moves the MP4
    index to the front, so a truncated copy still probes but cannot decode.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    container = container or _DEFAULT_CONTAINER[codec]
    if rotate is not None and container not in ("mp4", "mov"):
        raise ValueError("rotate needs an mp4 or mov container")
    sources: list[Source] = [source] if isinstance(source, (str, Bands)) else list(source)
    if not sources:
        raise ValueError("source must not be empty")
    if frames is not None:
        seconds = frames / fps
    part_seconds = seconds / len(sources)

    args: list[str] = []
    for part in sources:
        args += ["-f", "lavfi", "-t", f"{part_seconds:.6f}", "-i", _lavfi_spec(part, width, height, fps)]
    if audio_seconds is not None:
        args += ["-f", "lavfi", "-t", f"{audio_seconds:.6f}", "-i", "sine=frequency=440"]
    if len(sources) > 1:
        labels = "".join(f"[{i}:v]" for i in range(len(sources)))
        args += ["-filter_complex", f"{labels}concat=n={len(sources)}:v=1:a=0[v]", "-map", "[v]"]
    else:
        args += ["-map", "0:v"]
    if audio_seconds is not None:
        args += ["-map", f"{len(sources)}:a", "-c:a", _AUDIO_ENCODER.get(container, "aac")]
    args += _ENCODERS[codec].split()
    odd = width % 2 == 1 or height % 2 == 1
    chosen_pix_fmt = pix_fmt or (_ODD_SIZE_PIX_FMT.get(codec) if odd else None) or _DEFAULT_PIX_FMT[codec]
    if chosen_pix_fmt is not None:
        args += ["-pix_fmt", chosen_pix_fmt]
    if gop is not None:
        args += ["-g", str(gop)]
    if preset is not None:
        args += ["-preset", preset]  # the last -preset wins
    if frames is not None:
        args += ["-frames:v", str(frames)]
    if faststart:
        args += ["-movflags", "+faststart"]
    args += list(extra_args)

    # Encode in a scratch folder and move into place, so a failed run leaves no
    # half-written file behind for a cache to mistake for a fixture.
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        plain = Path(scratch) / f"plain.{container}"
        _run_ffmpeg([*args, "-f", _muxer(container), str(plain)])
        if rotate is not None:
            # A re-encode in ffmpeg 5.1 drops the tag; a stream copy turns it into a
            # display matrix.
            rotated = Path(scratch) / f"rotated.{container}"
            _run_ffmpeg(
                [
                    "-i",
                    str(plain),
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    "-metadata:s:v:0",
                    f"rotate={rotate}",
                    "-f",
                    _muxer(container),
                    str(rotated),
                ]
            )
            plain = rotated
        os.replace(plain, out)
    return out


def _muxer(container: str) -> str:
    return {"mkv": "matroska"}.get(container, container)


# --- bad inputs ------------------------------------------------------------------


def make_empty_file(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.write_bytes(b"")
    return out


def make_text_file(path: str | os.PathLike[str], text: str = "this is not a video\n" * 200) -> Path:
    """A plain text file.  With a ``.txt`` name ffmpeg would happily read it as
    ANSI art (the ``tty`` demuxer) unless formats are restricted."""
    out = Path(path)
    out.write_text(text)
    return out


def make_truncated_copy(source: str | os.PathLike[str], path: str | os.PathLike[str], *, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes, as an interrupted upload would be."""
    data = Path(source).read_bytes()
    out = Path(path)
    out.write_bytes(data[: max(1, int(len(data) * fraction))])
    return out


def make_audio_only(path: str | os.PathLike[str], *, seconds: float = 1.0) -> Path:
    """An AAC-in-MP4 (``.m4a``-style) file with no video stream."""
    out = Path(path)
    _run_ffmpeg(["-f", "lavfi", "-t", f"{seconds}", "-i", "sine=frequency=440", "-c:a", "aac", "-f", "mp4", str(out)])
    return out


def make_zero_frame_video(path: str | os.PathLike[str]) -> Path:
    """An AVI whose H.264 video stream is declared but holds no frames at all."""
    out = Path(path)
    _run_ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=160x120:r=25",
            "-frames:v",
            "0",
            "-c:v",
            "libx264",
            "-f",
            "avi",
            str(out),
        ]
    )
    return out


def make_absurd_dimensions(path: str | os.PathLike[str], *, width: int = 12000, height: int = 12000) -> Path:
    """A YUV4MPEG2 file whose header claims ``width x height`` (with a few bytes of
    a frame).  12000x12000 is accepted by ffmpeg's own sanity check (it rejects
    sizes above roughly 16000x16000 itself) but is far beyond any real video."""
    out = Path(path)
    header = f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
    out.write_bytes(header + bytes(range(256)) * 4)
    return out


# --- a cache for session fixtures -------------------------------------------------


class VideoCache:
    """Builds each distinct fixture once per session, under ``root``.

    ``video(**options)`` takes the keyword arguments of :func:`make_video` and
    returns the same path for the same options; ``file(name, build)`` caches
    any other generated file (``build`` receives the path to write).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def video(self, **options: Any) -> Path:
        codec = options.get("codec", "h264")
        container = options.get("container") or _DEFAULT_CONTAINER[codec]
        key = hashlib.sha1(repr(sorted(options.items())).encode()).hexdigest()[:16]
        path = self.root / f"{codec}-{key}.{container}"
        if not path.exists():
            make_video(path, **options)
        return path

    def file(self, name: str, build: Callable[[Path], object]) -> Path:
        path = self.root / name
        if not path.exists():
            partial = path.with_name(f".partial-{path.name}")
            build(partial)
            os.replace(partial, path)
        return path
