"""Sampling cost versus video length and plan: the same N frames from a 10-second and a 10-minute video.

    .venv/bin/python -m benchmarks.bench_sampling [--quick] [--repeats 3]

Both videos are 1280x720 30 fps H.264 (x264 veryfast, 3 Mbit/s); the long one
is the stream-copied concatenation of 60 ten-second videos made the same way
as the short one, so the two decode alike.  Two keyframe intervals: 2 s (the
target case, typical of uploads) and x264's default (at most 250 frames,
8.3 s at 30 fps: the expensive case for accurate seeking).  Short and long are
timed alternately, ``--repeats`` times each, in this one process; the figure
is the median, the cost is wall time and the CPU time of the ffmpeg/ffprobe
processes (steadier on a shared machine: the decode CPU-seconds per video),
with the frames ffmpeg's decoders produced (its own count) and the decoding
mode the plan chose.  Plans: the keyframe-aware default (``nearest_keyframe``),
exact frames (``accurate``) and the keyframe at or before (``keyframe``).  The
naive pipeline's decode cost is its whole run (``benchmarks.naive``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    LEAN_FFMPEG_DIR,
    children_cpu_seconds,
    lean_ffmpeg,
    load_average,
    log,
    machine,
    median,
    now_utc,
    relpath,
    save,
)
from benchmarks.corpus import DEFAULT_CACHE, Corpus, describe, long_video
from detectors.sampling import FfmpegSampler, SamplingConfig

IMAGE_SIZE = 224
LEAN_LABEL = "default, lean static ffmpeg (scripts/build-ffmpeg.sh)"


def _time_once(sampler: FfmpegSampler, path: Path) -> tuple[float, float, int, int | None, str]:
    cpu = children_cpu_seconds()
    started = time.perf_counter()
    frames = sampler.sample(path, IMAGE_SIZE)
    wall, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu
    return wall, cpu, len(frames), frames.frames_decoded, frames.decode_mode


def measure_pair(config: SamplingConfig, short: Path, long: Path, repeats: int) -> dict[str, Any]:
    sampler = FfmpegSampler(config)
    _time_once(sampler, short)  # warm the page cache and the ffmpeg binaries
    _time_once(sampler, long)
    walls: dict[str, list[float]] = {"short": [], "long": []}
    cpus: dict[str, list[float]] = {"short": [], "long": []}
    counts: dict[str, int] = {}
    decoded: dict[str, int | None] = {}
    modes: dict[str, str] = {}
    for _ in range(repeats):
        for name, path in (("short", short), ("long", long)):
            wall, cpu, count, decoded[name], modes[name] = _time_once(sampler, path)
            walls[name].append(wall)
            cpus[name].append(cpu)
            counts[name] = count
    out: dict[str, Any] = {}
    for name in ("short", "long"):
        wall = median(walls[name])
        out[name] = {
            "frames": counts[name],
            "frames_decoded": decoded[name],
            "decode_mode": modes[name],
            "wall_seconds": wall,
            "cpu_seconds": median(cpus[name]),
            "frames_per_second": counts[name] / wall,
            "wall_runs": walls[name],
        }
    out["ratio_wall"] = out["long"]["wall_seconds"] / out["short"]["wall_seconds"]
    out["ratio_cpu"] = out["long"]["cpu_seconds"] / out["short"]["cpu_seconds"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    corpus = Corpus(args.cache_dir / "corpus")
    load_start = load_average()
    started_at = now_utc()

    pairs = {"gop 2 s": long_video(corpus, gop_seconds=2.0)}
    if not args.quick:
        pairs["gop 1 s (phone-like)"] = long_video(corpus, gop_seconds=1.0)
        pairs["x264 default gop (250 frames)"] = long_video(corpus, gop_seconds=None)
    configs: list[tuple[str, SamplingConfig]] = [
        ("default (nearest_keyframe, tolerance 0.5)", SamplingConfig()),
        ("seek='accurate' (exact frames)", SamplingConfig(seek="accurate")),
        ("seek='keyframe'", SamplingConfig(seek="keyframe")),
    ]
    lean = lean_ffmpeg()
    if lean is not None:
        configs.insert(1, (LEAN_LABEL, SamplingConfig(ffmpeg_binary=lean[0], ffprobe_binary=lean[1])))
    else:
        log(f"no lean ffmpeg in {relpath(LEAN_FFMPEG_DIR)} (bash scripts/build-ffmpeg.sh): measuring Debian's only")
    if not args.quick:
        configs.append(
            ("skip_non_reference=True (accurate otherwise)", SamplingConfig(seek="accurate", skip_non_reference=True))
        )
    frame_counts = (16,) if args.quick else (16, 8)
    rows = []
    for gop, (short, long) in pairs.items():
        for label, base in configs:
            for frames in frame_counts if label.startswith("default") else frame_counts[:1]:
                config = replace(base, frames=frames)
                log(f"sampling {frames} frames, {gop}, {label}")
                result = measure_pair(config, short, long, repeats)
                rows.append({"gop": gop, "config": label, "frames_requested": frames, **result})
                log(
                    f"  short {result['short']['wall_seconds']:.2f} s ({result['short']['cpu_seconds']:.2f} s CPU, "
                    f"{result['short']['frames_decoded']} decoded, {result['short']['decode_mode']}), "
                    f"long {result['long']['wall_seconds']:.2f} s ({result['long']['cpu_seconds']:.2f} s CPU, "
                    f"{result['long']['frames_decoded']} decoded, {result['long']['decode_mode']}), "
                    f"ratio {result['ratio_wall']:.2f} (cpu {result['ratio_cpu']:.2f})"
                )
    videos = {}
    for gop, (short, long) in pairs.items():
        videos[gop] = {
            "short": {"path": relpath(short), **describe(short)},
            "long": {"path": relpath(long), **describe(long)},
        }
    save(
        "sampling",
        {
            "started_at": started_at,
            "load_average_start": load_start,
            "machine": machine(),
            "command": "python -m benchmarks.bench_sampling" + (" --quick" if args.quick else ""),
            "repeats": repeats,
            "image_size": IMAGE_SIZE,
            "sampling_defaults": asdict(SamplingConfig()),
            "videos": videos,
            "rows": rows,
        },
        args.cache_dir,
    )


if __name__ == "__main__":
    main()
