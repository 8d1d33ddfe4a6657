"""The synthetic benchmark corpus: real files in real containers, made with ffmpeg once.

Every video is described by a :class:`VideoSpec`; its file name carries a hash
of the spec, so a changed recipe builds a new file and an unchanged one is
reused from the cache (``.cache/bench/corpus`` by default).  Files are written
to a scratch name and renamed into place, so an interrupted build never leaves
a half-written video for the cache to trust.

Sets:

* :func:`h264_720p_set` - 10-second 1280x720 30 fps H.264 videos, the kind the
  scan targets are stated for: x264 ``veryfast``, 3 Mbit/s (4.5 peak), a
  keyframe every 2 s (typical of phone and web uploads), moving content.
* :func:`mixed_set` - 40 videos of mixed sizes (360p to 1080p, portrait and
  square), lengths (4-12 s) and codecs (H.264, H.265, VP9, AV1, MPEG-4 part 2).
* :func:`long_video` - a 10-minute 720p H.264 video, the stream-copied
  concatenation of 10-second videos made like :func:`h264_720p_set`'s (so it
  decodes exactly like them, at the cost of a minute of encoding, not ten).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".cache" / "bench"

#: Moving lavfi sources (a static picture would compress to nothing and decode for free).
#: ``{w}``, ``{h}``, ``{fps}`` and ``{seed}`` are filled in per video.
SOURCES: tuple[str, ...] = (
    "testsrc2=s={w}x{h}:r={fps}",
    "gradients=s={w}x{h}:r={fps}:speed=0.03:seed={seed}",
    "cellauto=s={w}x{h}:r={fps}:rule=110:seed={seed}",
    "smptehdbars=s={w}x{h}:r={fps},scroll=h=0.003:v=0.002",
    "testsrc2=s={w}x{h}:r={fps},negate,hflip",
    "gradients=s={w}x{h}:r={fps}:speed=0.05:seed={seed},noise=alls=6:allf=t",
)

_ENCODERS: dict[str, list[str]] = {
    "h264": ["-c:v", "libx264"],
    "h265": ["-c:v", "libx265", "-x265-params", "log-level=error", "-tag:v", "hvc1"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"],
    "av1": ["-c:v", "libsvtav1"],
    "mpeg4": ["-c:v", "mpeg4"],
}
_CONTAINERS = {"h264": "mp4", "h265": "mp4", "vp9": "webm", "av1": "mkv", "mpeg4": "avi"}
_MUXERS = {"mp4": "mp4", "webm": "webm", "mkv": "matroska", "avi": "avi"}


@dataclass(frozen=True)
class VideoSpec:
    """How one synthetic video is made."""

    name: str
    codec: str = "h264"
    width: int = 1280
    height: int = 720
    fps: int = 30
    seconds: float = 10.0
    source: int = 0
    seed: int = 0
    gop_seconds: float | None = 2.0
    """Keyframe interval; ``None`` keeps the encoder's default (x264: 250 frames)."""
    bitrate_kbps: int | None = 3000
    preset: str | None = "veryfast"

    @property
    def container(self) -> str:
        return _CONTAINERS[self.codec]

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    def filename(self) -> str:
        return f"{self.name}-{self.key()}.{self.container}"

    def ffmpeg_args(self, out: Path) -> list[str]:
        source = SOURCES[self.source % len(SOURCES)].format(w=self.width, h=self.height, fps=self.fps, seed=self.seed)
        args = ["-f", "lavfi", "-t", f"{self.seconds:.3f}", "-i", source, *_ENCODERS[self.codec]]
        if self.codec in ("h264", "h265"):
            args += ["-preset", self.preset or "veryfast"]
        elif self.codec == "av1":
            args += ["-preset", "12"]
        if self.bitrate_kbps is not None:
            if self.codec == "mpeg4":
                args += ["-b:v", f"{self.bitrate_kbps}k"]
            else:
                args += [
                    "-b:v", f"{self.bitrate_kbps}k",
                    "-maxrate", f"{self.bitrate_kbps * 3 // 2}k",
                    "-bufsize", f"{self.bitrate_kbps * 2}k",
                ]  # fmt: skip
        if self.gop_seconds is not None:
            args += ["-g", str(max(1, round(self.gop_seconds * self.fps)))]
        args += ["-pix_fmt", "yuv420p", "-an", "-f", _MUXERS[self.container], str(out)]
        return args


def _ffmpeg(args: Sequence[str], timeout_seconds: float = 1800) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_seconds, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")


class Corpus:
    """Builds and caches the benchmark videos under ``root``."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_CACHE / "corpus", verbose: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.verbose = verbose

    def _log(self, message: str) -> None:
        if self.verbose:
            print(f"[corpus] {message}", file=sys.stderr, flush=True)

    def video(self, spec: VideoSpec) -> Path:
        path = self.root / spec.filename()
        if path.exists():
            return path
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".build-") as scratch:
            partial = Path(scratch) / path.name
            _ffmpeg(spec.ffmpeg_args(partial))
            os.replace(partial, path)
        self._log(f"encoded {path.name} in {time.monotonic() - started:.1f} s")
        return path

    def videos(self, specs: Sequence[VideoSpec]) -> list[Path]:
        return [self.video(spec) for spec in specs]

    def concatenation(self, name: str, parts: Sequence[Path], repeat_to: int) -> Path:
        """``repeat_to`` parts (cycling through ``parts``) joined by a stream copy."""
        key = hashlib.sha1(json.dumps([p.name for p in parts] + [repeat_to]).encode()).hexdigest()[:10]
        path = self.root / f"{name}-{key}{parts[0].suffix}"
        if path.exists():
            return path
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".build-") as scratch:
            listing = Path(scratch) / "parts.txt"
            listing.write_text(
                "".join(f"file '{parts[i % len(parts)].resolve()}'\n" for i in range(repeat_to)), encoding="utf-8"
            )
            partial = Path(scratch) / path.name
            _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", "-f", "mp4", str(partial)])
            os.replace(partial, path)
        self._log(f"joined {path.name} ({repeat_to} parts) in {time.monotonic() - started:.1f} s")
        return path


def h264_720p_specs(count: int, gop_seconds: float | None = 2.0, prefix: str = "h264-720p-10s") -> list[VideoSpec]:
    return [VideoSpec(name=f"{prefix}-{i:02d}", source=i, seed=i, gop_seconds=gop_seconds) for i in range(count)]


def h264_720p_set(corpus: Corpus, count: int = 22) -> list[Path]:
    return corpus.videos(h264_720p_specs(count))


#: (codec, width, height, seconds, kbps): 40 videos, 5 per row, mixed sizes and codecs.
_MIXED_ROWS: tuple[tuple[str, int, int, float, int], ...] = (
    ("h264", 640, 360, 8.0, 800),
    ("h264", 854, 480, 6.0, 1500),
    ("h264", 1280, 720, 10.0, 3000),
    ("h264", 1920, 1080, 5.0, 6000),
    ("h264", 720, 1280, 8.0, 3000),  # portrait phone video
    ("h265", 1280, 720, 6.0, 2000),
    ("vp9", 854, 480, 6.0, 1200),
    ("mpeg4", 640, 360, 8.0, 1200),
    ("av1", 640, 480, 4.0, 800),
    ("h264", 480, 480, 12.0, 800),  # square
)


def mixed_specs(count: int = 40) -> list[VideoSpec]:
    specs = []
    for i in range(count):
        codec, width, height, seconds, kbps = _MIXED_ROWS[i % len(_MIXED_ROWS)]
        specs.append(
            VideoSpec(
                name=f"mixed-{i:02d}-{codec}-{width}x{height}",
                codec=codec,
                width=width,
                height=height,
                fps=(30, 25, 24)[i % 3],
                seconds=seconds,
                source=i,
                seed=100 + i,
                bitrate_kbps=kbps,
            )
        )
    return specs


def mixed_set(corpus: Corpus, count: int = 40) -> list[Path]:
    return corpus.videos(mixed_specs(count))


def long_video(corpus: Corpus, gop_seconds: float | None = 2.0, minutes: int = 10) -> tuple[Path, Path]:
    """``(short, long)``: a 10-second video and a ``minutes``-long one made of such videos."""
    tag = "gop2s" if gop_seconds == 2.0 else ("gopdefault" if gop_seconds is None else f"gop{gop_seconds:g}s")
    parts = corpus.videos(h264_720p_specs(6, gop_seconds=gop_seconds, prefix=f"segment-{tag}"))
    long = corpus.concatenation(f"h264-720p-{minutes}min-{tag}", parts, repeat_to=minutes * 6)
    return parts[0], long


def describe(path: Path) -> dict[str, object]:
    """Codec, size, frame rate, duration and bit rate, as ffprobe reports them."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-print_format", "json",
         "-show_entries", "stream=codec_name,width,height,avg_frame_rate:format=duration,bit_rate", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    data = json.loads(done.stdout)
    stream = data["streams"][0]
    fmt = data["format"]
    num, _, den = str(stream.get("avg_frame_rate", "0/1")).partition("/")
    return {
        "codec": stream.get("codec_name"),
        "width": stream.get("width"),
        "height": stream.get("height"),
        "fps": round(float(num) / float(den or 1), 3) if float(den or 1) else None,
        "duration_seconds": round(float(fmt.get("duration", 0.0)), 3),
        "bitrate_kbps": round(float(fmt.get("bit_rate", 0.0)) / 1000),
        "bytes": path.stat().st_size,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or check) the cached benchmark corpus.")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--quick", action="store_true", help="Only what --quick benchmarks use.")
    args = parser.parse_args(argv)
    corpus = Corpus(args.cache_dir / "corpus")
    started = time.monotonic()
    h264_720p_set(corpus, 12 if args.quick else 22)
    long_video(corpus, gop_seconds=2.0)
    if not args.quick:
        mixed_set(corpus)
        long_video(corpus, gop_seconds=None)
    print(f"corpus ready in {corpus.root} ({time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
