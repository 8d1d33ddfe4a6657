"""Scan throughput: ``motionguard scan`` against a naive pipeline and against the model alone.

    .venv/bin/python -m benchmarks.bench_scan [--quick] [--rounds 2]

Three sides, each a separate process timed as a whole, all on the CPU with the
same random-initialised architecture (``ViT-B-32``) and 8 frames per video:

* ``scan`` - ``motionguard scan --model ViT-B-32 --pretrained none --device cpu
  --frames 8 --json FILES`` (the real command);
* ``naive`` - :mod:`benchmarks.naive` (PyAV decodes every frame at full
  resolution, PIL preprocessing per frame, one model call per video);
* ``floor`` - :mod:`benchmarks.floor` (the model alone on as many
  already-preprocessed frames, one call per video).

Steady-state cost per video is ``(T(large) - T(small)) / (large - small)`` for
each side, so interpreter start-up, model loading and the prompt embeddings
cancel out.  A round times every (side, size) once, in a rotating order;
ratios are computed within a round and the report gives their median over
rounds (and every round's value).  ``--variants`` adds scan configurations
(e.g. the settings before a performance change) to the same rounds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    LEAN_FFMPEG_DIR,
    PYTHON,
    Timed,
    lean_ffmpeg,
    load_average,
    log,
    machine,
    median,
    now_utc,
    relpath,
    run_timed,
    save,
)
from benchmarks.corpus import DEFAULT_CACHE, Corpus, describe, h264_720p_set, mixed_set

_ENTRY_POINT = Path(PYTHON).with_name("motionguard")
#: The installed ``motionguard`` command (``python -m streamer`` is the same code).
MOTIONGUARD = [str(_ENTRY_POINT)] if _ENTRY_POINT.exists() else [PYTHON, "-m", "streamer"]
MODEL = "ViT-B-32"
FRAMES = 8


@dataclass(frozen=True)
class Side:
    """A way to process ``n`` videos: builds the command line."""

    name: str
    kind: str  # scan | naive | floor | decode
    extra: tuple[str, ...] = ()
    description: str = ""

    def argv(self, paths: Sequence[Path]) -> list[str]:
        files = [str(p) for p in paths]
        if self.kind == "scan":
            return [
                *MOTIONGUARD, "scan", "--model", MODEL, "--pretrained", "none", "--device", "cpu",
                "--frames", str(FRAMES), "--json", *self.extra, *files,
            ]  # fmt: skip
        if self.kind == "naive":
            return [PYTHON, "-m", "benchmarks.naive", "--model", MODEL, "--frames", str(FRAMES), *self.extra, *files]
        if self.kind == "decode":
            return [PYTHON, "-m", "benchmarks.decode_only", "--frames", str(FRAMES), *self.extra, *files]
        if self.kind == "floor":
            return [
                PYTHON, "-m", "benchmarks.floor", "--model", MODEL, "--frames", str(FRAMES),
                "--videos", str(len(paths)), *self.extra,
            ]  # fmt: skip
        raise ValueError(self.kind)


SCAN = Side("scan", "scan", description="motionguard scan, default options")
#: The decoding options that the measurements below favour on a 2-core machine.
TUNED_OPTIONS = ("--decode-workers", "2", "--decoder-threads", "1")
SCAN_TUNED = Side(
    "scan-tuned",
    "scan",
    (*TUNED_OPTIONS, "--skip-non-reference"),
    "motionguard scan, 2 decode workers with 1 thread per ffmpeg, --skip-non-reference (each frame the first "
    "reference frame at or after its time)",
)
_LEAN = lean_ffmpeg()
_LEAN_OPTIONS = ("--ffmpeg", _LEAN[0], "--ffprobe", _LEAN[1]) if _LEAN else ()
SCAN_LEAN = Side(
    "scan-lean",
    "scan",
    _LEAN_OPTIONS,
    "motionguard scan, default options, with the lean static ffmpeg and ffprobe of scripts/build-ffmpeg.sh",
)
NAIVE = Side("naive", "naive", description="PyAV full decode + PIL preprocessing + one model call per video")
FLOOR = Side("floor", "floor", description="the model alone on preprocessed frames, one call per video")
DECODE = Side("decode", "decode", description="the sampler alone, scan's default options (2 workers)")
DECODE_TUNED = Side(
    "decode-tuned",
    "decode",
    ("--decoder-threads", "1", "--skip-non-reference"),
    "the sampler alone, as in scan-tuned (2 workers, 1 thread each, non-reference frames skipped)",
)
DECODE_LEAN = Side(
    "decode-lean", "decode", _LEAN_OPTIONS, "the sampler alone, as in scan-lean (default options, lean ffmpeg)"
)


@dataclass
class Measurements:
    sizes: tuple[int, int]
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(
        self, side: str, size: int, round_index: int, timed: Timed, frames: int, errors: int, provenance_ms: float = 0.0
    ) -> None:
        self.runs.setdefault(side, []).append(
            {
                "round": round_index,
                "videos": size,
                "wall_seconds": timed.wall_seconds,
                "cpu_seconds": timed.cpu_seconds,
                "frames": frames,
                "errors": errors,
                "provenance_ms": provenance_ms,
                "load_1min_after": load_average()[0],
                "command": timed.command if size == self.sizes[0] else None,
            }
        )

    def per_video(self, side: str, round_index: int, what: str = "wall_seconds") -> float:
        runs = {r["videos"]: r[what] for r in self.runs[side] if r["round"] == round_index}
        small, large = self.sizes
        return float(runs[large] - runs[small]) / (large - small)


def _count(side: Side, timed: Timed) -> tuple[int, int, float]:
    """Frames, errors and (scan only) the summed C2PA provenance read time in ms."""
    frames = errors = 0
    provenance_ms = 0.0
    for line in timed.stdout.splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if side.kind == "scan":
            frames += int(row.get("frames_scored") or 0)
            errors += row.get("error") is not None
            provenance_ms += float((row.get("timings_ms") or {}).get("provenance") or 0.0)
        else:
            frames += int(row.get("frames") or 0)
    return frames, errors, provenance_ms


def measure(
    sides: Sequence[Side], videos: Sequence[Path], sizes: tuple[int, int], rounds: int
) -> tuple[Measurements, list[dict[str, Any]]]:
    data = Measurements(sizes)
    order = [(side, size) for side in sides for size in sizes]
    for round_index in range(rounds):
        shift = round_index % len(order)
        for side, size in order[shift:] + order[:shift]:
            timed = run_timed(side.argv(videos[:size]), env={"PYTHONWARNINGS": "ignore"})
            frames, errors, provenance_ms = _count(side, timed)
            data.add(side.name, size, round_index, timed, frames, errors, provenance_ms)
            log(f"round {round_index + 1}/{rounds} {side.name:12s} {size:3d} videos: {timed.wall_seconds:6.1f} s "
                f"wall, {timed.cpu_seconds:6.1f} s cpu, {frames} frames, {errors} errors")  # fmt: skip
    summary = []
    for side in sides:
        per_round = [data.per_video(side.name, r) for r in range(rounds)]
        cpu_round = [data.per_video(side.name, r, "cpu_seconds") for r in range(rounds)]
        large = [r for r in data.runs[side.name] if r["videos"] == sizes[1]]
        provenance_ms = median([r["provenance_ms"] / r["videos"] for r in large])
        summary.append(
            {
                "side": side.name,
                "description": side.description,
                "seconds_per_video": median(per_round),
                "seconds_per_video_rounds": per_round,
                "cpu_seconds_per_video": median(cpu_round),
                "videos_per_second": 1.0 / median(per_round),
                "frames_per_second": FRAMES / median(per_round),
                "frames_in_large_run": large[0]["frames"],
                "errors_in_large_run": large[0]["errors"],
                "provenance_ms_per_video": provenance_ms if side.kind == "scan" else None,
                "provenance_share_of_scan": provenance_ms / 1000 / median(per_round) if side.kind == "scan" else None,
                "load_1min_after_large_runs": [r.get("load_1min_after") for r in large],
                "command": side.argv([Path(f"VIDEO{i}") for i in range(1, 3)]),
            }
        )
    return data, summary


def ratios(data: Measurements, a: str, b: str, rounds: int) -> dict[str, Any]:
    """Cost of ``a`` over cost of ``b`` per round (wall and CPU) and the medians."""
    wall = [data.per_video(a, r) / data.per_video(b, r) for r in range(rounds)]
    cpu = [data.per_video(a, r, "cpu_seconds") / data.per_video(b, r, "cpu_seconds") for r in range(rounds)]
    return {"of": a, "over": b, "wall": median(wall), "wall_rounds": wall, "cpu": median(cpu), "cpu_rounds": cpu}


#: Cumulative changes, each measured in the same process (the model loaded once):
#: (name, SamplingConfig changes, scan_many options, torch threads or None for torch's default).
ABLATION: tuple[tuple[str, dict[str, Any], dict[str, Any], int | None], ...] = (
    ("defaults (before)", {}, {}, None),
    ("+ 1 thread per ffmpeg", {"decoder_threads": 1}, {}, None),
    ("+ skip non-reference frames", {"decoder_threads": 1, "skip_non_reference": True}, {}, None),
    ("+ 2 videos per model call", {"decoder_threads": 1, "skip_non_reference": True}, {"batch_videos": 2}, None),
    ("tried, not kept: + the model on 1 torch thread (instead of 2 videos per call)",
     {"decoder_threads": 1, "skip_non_reference": True}, {}, 1),
)  # fmt: skip


def ablation(videos: Sequence[Path], repeats: int) -> dict[str, Any]:
    """Each cumulative change against the defaults, in one process, configurations interleaved."""
    import dataclasses
    import logging
    import time

    import torch

    from benchmarks.common import children_cpu_seconds
    from detectors.loading import DetectorOptions, build_detector
    from detectors.sampling import FfmpegSampler

    logging.getLogger("detectors").setLevel(logging.ERROR)
    default_threads = torch.get_num_threads()
    detector = build_detector(DetectorOptions(model=MODEL, pretrained="none", device="cpu", frames=FRAMES))
    base = detector.sampler.config  # type: ignore[attr-defined]
    list(detector.scan_many([str(p) for p in videos[:2]]))  # warm-up
    walls: dict[str, list[float]] = {name: [] for name, *_ in ABLATION}
    cpus: dict[str, list[float]] = {name: [] for name, *_ in ABLATION}
    for repeat in range(repeats):
        order = ABLATION if repeat % 2 == 0 else tuple(reversed(ABLATION))
        for name, sampling, options, threads in order:
            torch.set_num_threads(threads or default_threads)
            detector.sampler = FfmpegSampler(dataclasses.replace(base, **sampling))
            cpu_before, own_before = children_cpu_seconds(), time.process_time()
            started = time.perf_counter()
            results = list(detector.scan_many([str(p) for p in videos], **options))
            wall = time.perf_counter() - started
            cpu = children_cpu_seconds() - cpu_before + time.process_time() - own_before
            if not all(r.ok for r in results):
                raise RuntimeError(f"ablation {name}: some videos failed")
            walls[name].append(wall / len(videos))
            cpus[name].append(cpu / len(videos))
            log(f"ablation {repeat + 1}/{repeats} {name:55s} {wall / len(videos):.3f} s/video")
    torch.set_num_threads(default_threads)
    base_name = ABLATION[0][0]
    rows = []
    for name, sampling, options, threads in ABLATION:
        ratio_rounds = [w / b for w, b in zip(walls[name], walls[base_name], strict=True)]
        rows.append(
            {
                "change": name,
                "sampling": sampling,
                "scan_many": options,
                "model_threads": threads or default_threads,
                "seconds_per_video": median(walls[name]),
                "seconds_per_video_runs": walls[name],
                "cpu_seconds_per_video": median(cpus[name]),
                "ratio_to_defaults": median(ratio_rounds),
                "ratio_to_defaults_runs": ratio_rounds,
            }
        )
    return {"videos": len(videos), "repeats": repeats, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-mixed", action="store_true", help="Skip the mixed corpus.")
    parser.add_argument("--no-ablation", action="store_true", help="Skip the one-change-at-a-time measurements.")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    corpus = Corpus(args.cache_dir / "corpus")
    started_at, load_start = now_utc(), load_average()

    sizes = (2, 8) if args.quick else (2, 20)
    h264 = h264_720p_set(corpus, max(sizes) if args.quick else 22)
    sides = [SCAN, SCAN_TUNED, NAIVE, FLOOR, DECODE, DECODE_TUNED]
    if _LEAN:
        sides[1:1] = [SCAN_LEAN]
        sides.append(DECODE_LEAN)
    else:
        log(f"no lean ffmpeg in {relpath(LEAN_FFMPEG_DIR)} (bash scripts/build-ffmpeg.sh): scan-lean not measured")
    log(f"720p H.264 set: {sizes[0]} and {sizes[1]} videos, {rounds} round(s), sides {[s.name for s in sides]}")
    data, summary = measure(sides, h264, sizes, rounds)
    comparisons = [
        ratios(data, "naive", "scan", rounds),
        ratios(data, "scan", "floor", rounds),
        ratios(data, "naive", "scan-tuned", rounds),
        ratios(data, "scan-tuned", "floor", rounds),
        ratios(data, "scan", "scan-tuned", rounds),
        ratios(data, "naive", "floor", rounds),
    ]
    if _LEAN:
        comparisons[4:4] = [
            ratios(data, "naive", "scan-lean", rounds),
            ratios(data, "scan-lean", "floor", rounds),
            ratios(data, "scan", "scan-lean", rounds),
        ]
    result: dict[str, Any] = {
        "started_at": started_at,
        "load_average_start": load_start,
        "machine": machine(),
        "command": "python -m benchmarks.bench_scan" + (" --quick" if args.quick else ""),
        "model": MODEL,
        "frames_per_video": FRAMES,
        "h264_720p": {
            "sizes": sizes,
            "rounds": rounds,
            "video": describe(h264[0]),
            "videos": [relpath(p) for p in h264[: sizes[1]]],
            "summary": summary,
            "ratios": comparisons,
            "runs": data.runs,
        },
    }
    save("scan", result, args.cache_dir)

    if not args.no_ablation:
        count = 6 if args.quick else 10
        log(f"ablation: {len(ABLATION)} configurations, {count} videos, 2 repeats")
        result["ablation"] = ablation(h264[:count], 1 if args.quick else 2)
        save("scan", result, args.cache_dir)

    if not args.no_mixed and not args.quick:
        mixed = mixed_set(corpus)
        mixed_sizes = (10, len(mixed))  # the first 10 hold one video of each kind
        log(f"mixed set: {mixed_sizes[0]} and {mixed_sizes[1]} videos, 1 round")
        mixed_sides = [SCAN, SCAN_TUNED, NAIVE, *([SCAN_LEAN] if _LEAN else [])]
        mdata, msummary = measure(mixed_sides, mixed, mixed_sizes, 1)
        result["mixed"] = {
            "sizes": mixed_sizes,
            "rounds": 1,
            "videos": [{"path": relpath(p), **describe(p)} for p in mixed],
            "summary": msummary,
            "ratios": [
                ratios(mdata, "naive", "scan", 1),
                ratios(mdata, "naive", "scan-tuned", 1),
                *([ratios(mdata, "naive", "scan-lean", 1)] if _LEAN else []),
            ],
            "runs": mdata.runs,
        }
        save("scan", result, args.cache_dir)
    result["load_average_end"] = load_average()


if __name__ == "__main__":
    main()
