"""Make a few small sample videos with ffmpeg for the demo (and one bad file).

``signed-ai.mp4`` is ``walk-h264.mp4`` with a C2PA manifest declaring it AI-generated
(``trainedAlgorithmicMedia``), signed by a throw-away chain made on the spot with the
tests' signing helper (:mod:`tests.c2pa_signing`): the worker flags it from its
Content Credentials, as an untrusted but intact declaration.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25:duration=4",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(out / "walk-h264.mp4"),
    )
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "mandelbrot=size=320x320:rate=15",
        "-t",
        "3",
        "-c:v",
        "libvpx-vp9",
        "-b:v",
        "0",
        "-crf",
        "40",
        "-deadline",
        "realtime",
        str(out / "dance-vp9.webm"),
    )
    _ffmpeg("-f", "lavfi", "-i", "life=size=200x200:rate=10:mold=10", "-t", "2", str(out / "wave.gif"))
    (out / "notes.txt").write_text("this is not a video\n", encoding="utf-8")
    data = (out / "walk-h264.mp4").read_bytes()
    (out / "truncated.mp4").write_bytes(data[: len(data) // 3])
    _sign_ai_copy(out / "walk-h264.mp4", out / "signed-ai.mp4", out.parent / "demo-c2pa-chain")


def _sign_ai_copy(source: Path, dest: Path, chain_dir: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.c2pa_signing import AI, make_chain, sign

    sign(source, dest, make_chain(chain_dir, "MotionGuard Demo"), AI)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-out/videos")
