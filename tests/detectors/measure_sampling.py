"""Measure how sampling time depends on video length (not a test; run by hand).

    PYTHONPATH=. python tests/detectors/measure_sampling.py [--cache /tmp/motionguard-measure]

Makes a 10-second and a 10-minute 1280x720 30 fps H.264 video (x264
``-preset veryfast``, otherwise default settings: a keyframe every 250 frames
at most) once, caches them, then times ``FfmpegSampler.sample`` 3 times per
case and prints medians (wall time, and the CPU time of the ffmpeg/ffprobe
children, which is steadier on a shared machine), the long/short ratio and
the ffmpeg command lines.
The 10-minute video takes several minutes to encode on a small machine.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from detectors.sampling import FfmpegSampler, SamplingConfig
from tests.videofactory import make_video

RUNS = 3
IMAGE_SIZE = 224


class _CommandRecorder(logging.Handler):
    """Keeps the command lines the sampler logs at DEBUG level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.commands: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("running "):
            self.commands.append(message.removeprefix("running "))


def _video(cache: Path, seconds: int) -> Path:
    path = cache / f"h264-{seconds}s-1280x720-30fps-veryfast.mp4"
    if not path.exists():
        print(f"encoding {path} ({seconds} s) ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        make_video(path, codec="h264", seconds=seconds, width=1280, height=720, fps=30, preset="veryfast")
        print(f"  done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return path


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _medians(sampler: FfmpegSampler, path: Path) -> tuple[float, float, int]:
    """Median wall time, median CPU time of the ffmpeg/ffprobe children, frames."""
    walls, cpus = [], []
    count = 0
    for _ in range(RUNS):
        started, cpu_started = time.perf_counter(), _child_cpu_seconds()
        result = sampler.sample(path, IMAGE_SIZE)
        walls.append(time.perf_counter() - started)
        cpus.append(_child_cpu_seconds() - cpu_started)
        count = len(result)
    return statistics.median(walls), statistics.median(cpus), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/motionguard-measure"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    short, long = _video(args.cache, 10), _video(args.cache, 600)

    recorder = _CommandRecorder()
    logger = logging.getLogger("detectors.sampling")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(recorder)

    cases = [
        ("default (one pass if <= 600 frames, else seek)", SamplingConfig()),
        ("always seek (sequential_max_frames=0)", SamplingConfig(sequential_max_frames=0)),
        (
            "always seek, one process (seeks_per_process=16)",
            SamplingConfig(sequential_max_frames=0, seeks_per_process=16),
        ),
        ("keyframe seeks (seek='keyframe')", SamplingConfig(seek="keyframe")),
    ]
    print(f"median of {RUNS} runs, image_size={IMAGE_SIZE}; wall time (CPU time of ffmpeg+ffprobe)")
    print(f"{'config':44s} {'frames':>6s} {'10 s video':>16s} {'10 min video':>16s} {'long/short':>10s}")
    commands: dict[str, str] = {}
    for label, base in cases:
        for frames in (16, 8):
            sampler = FfmpegSampler(replace(base, frames=frames))
            short_s, short_cpu, n_short = _medians(sampler, short)
            commands[f"{label}, {frames} frames, 10 s video"] = recorder.commands[-1]
            long_s, long_cpu, n_long = _medians(sampler, long)
            commands[f"{label}, {frames} frames, 10 min video"] = recorder.commands[-1]
            print(
                f"{label:44s} {frames:6d} {short_s:6.2f}s ({short_cpu:5.2f}s)"
                f" {long_s:6.2f}s ({long_cpu:5.2f}s) {long_s / short_s:10.2f}"
                f"   (got {n_short}/{n_long} frames)"
            )
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of any ffmpeg/ffprobe child: {peak_mib:.0f} MiB")
    for name, command in commands.items():
        if "8 frames" in name:
            continue
        print(f"\n[{name}]\n{command}")


if __name__ == "__main__":
    main()
