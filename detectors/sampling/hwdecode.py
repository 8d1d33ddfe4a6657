"""Whether ffmpeg can decode on this host's NVIDIA GPU (NVDEC), checked once per sampler.

Listing ``cuda`` in ``ffmpeg -hwaccels`` only says that ffmpeg was built with it
(Debian's build is); decoding also needs the NVIDIA driver's ``libcuda`` and a
visible GPU.  So the check decodes a real file, ``nvdec-check.mp4`` next to this
module (two 256x144 H.264 frames, made with ``ffmpeg -f lavfi -i
testsrc2=size=256x144:rate=2:duration=1 -c:v libx264 -pix_fmt yuv420p``; shipped
rather than encoded here, because a lean ffmpeg build has no encoder), with
``-hwaccel cuda`` and ``-hwaccel_output_format cuda`` (which fails instead of
quietly decoding on the CPU when the device cannot be set up).  The answer is
cached per ffmpeg binary for the life of the process.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from detectors.errors import MotionGuardError
from detectors.sampling.process import _last_line, _run

logger = logging.getLogger(__name__)

_CHECK_TIMEOUT_SECONDS = 30.0
_CHECK_CLIP = Path(__file__).with_name("nvdec-check.mp4")


@dataclass(frozen=True)
class HwDecodeCheck:
    """The outcome of one check: ``usable``, or ``reason`` (one line for the log) why not."""

    usable: bool
    reason: str = ""


@functools.cache
def check_cuda_decoding(ffmpeg_binary: str) -> HwDecodeCheck:
    """Can ``ffmpeg_binary`` decode H.264 with ``-hwaccel cuda`` here?  Never raises; logs the answer once."""
    check = _check(ffmpeg_binary)
    if check.usable:
        logger.info("NVDEC works with %s: video is decoded on the GPU (ffmpeg -hwaccel cuda)", ffmpeg_binary)
    else:
        logger.warning("GPU video decoding (hw_decode=cuda) is not available: %s; decoding on the CPU", check.reason)
    return check


def _check(ffmpeg_binary: str) -> HwDecodeCheck:
    try:
        listed = _run(
            [ffmpeg_binary, "-hide_banner", "-hwaccels"], timeout_seconds=_CHECK_TIMEOUT_SECONDS, tool="ffmpeg"
        )
    except MotionGuardError as e:
        return HwDecodeCheck(False, f"cannot run {ffmpeg_binary}: {e.message}")
    methods = listed.stdout.decode("utf-8", errors="replace").split()
    if listed.returncode != 0 or "cuda" not in methods:
        return HwDecodeCheck(False, f"{ffmpeg_binary} was built without the cuda hwaccel")
    clip = str(_CHECK_CLIP)
    decode = [
        ffmpeg_binary, "-hide_banner", "-nostdin", "-v", "error", "-hwaccel", "cuda",
        "-hwaccel_output_format", "cuda", "-i", f"file:{clip}", "-f", "null", "-",
    ]  # fmt: skip
    try:
        done = _run(decode, timeout_seconds=_CHECK_TIMEOUT_SECONDS, tool="ffmpeg")
    except MotionGuardError as e:
        return HwDecodeCheck(False, e.message)
    if done.returncode != 0:
        return HwDecodeCheck(False, _last_line(done.stderr, clip) or f"ffmpeg exited with {done.returncode}")
    return HwDecodeCheck(True)


def resolve_hw_decode(requested: str, ffmpeg_binary: str) -> str:
    """The decoder a sampler will use: ``requested`` when it works here, else ``none``."""
    if requested == "none":
        return "none"
    return requested if check_cuda_decoding(ffmpeg_binary).usable else "none"
