"""GPU benchmark: image-tower frames per second, then decode + embed end to end.

    .venv/bin/python -m benchmarks.gpu_bench                 # on a GPU machine: the full run
    .venv/bin/python -m benchmarks.gpu_bench --device cpu    # runs, slowly, on the CPU (a smoke run)

Part 1 - the image tower alone (``model.encode_image``) on frames already on
the device, for ViT-B/32 and ViT-L/14 (random weights: the speed is the
same), at several batch sizes, in four configurations: float32 eager; autocast
(bf16 where supported); autocast + channels-last; autocast + channels-last +
``torch.compile``.  Each point: warm-up calls, then timed calls between
``torch.cuda.synchronize()``; frames/s = frames / seconds.

Part 2 - decode + embed end to end: :class:`detectors.pipeline.Detector`'s
``scan_many`` over the benchmark's 10-second 720p H.264 videos (8 frames
each) with 1, 2, 4 ... decode workers (ffmpeg processes) feeding the one
model on the device, frames of up to ``--batch-videos`` videos per model call
(pinned host memory, asynchronous host-to-device copies and autocast come from
:class:`detectors.embedding.ClipEmbedder`).

Target (issue 6): ViT-L/14 at least 2,500 frames/s on one H100 (the compute
bound is near 4,900; an RTX 4090 reaches about 660 in published timm
numbers).  Results go to ``.cache/bench/results/gpu.json`` (or ``gpu-cpu.json``
for a CPU run) and into ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import open_clip
import torch

from benchmarks.common import LEAN_FFMPEG_DIR, LEAN_NVDEC_FFMPEG_DIR, load_average, log, machine, now_utc, save
from benchmarks.corpus import DEFAULT_CACHE, Corpus, h264_720p_set
from detectors.errors import MotionGuardError

#: End-to-end sampling variants: the default (nearest keyframe within the tolerance, decoded on the CPU);
#: exact frames; H.264/H.265 non-reference frames skipped; keyframes at or before each time; the default
#: decoded on the GPU's NVDEC (``hw_decode="cuda"``; the row says ``hw_decode: none`` where it fell back);
#: the default with the lean static ffmpeg of scripts/build-ffmpeg.sh, on the CPU and (its --nvdec build) on NVDEC.
SAMPLING_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "exact": {"seek": "accurate"},
    "noref": {"seek": "accurate", "skip_non_reference": True},
    "keyframe": {"seek": "keyframe", "sequential_max_frames": 0},
    "nvdec": {"hw_decode": "cuda"},
    "lean": {"ffmpeg_binary": str(LEAN_FFMPEG_DIR / "ffmpeg"), "ffprobe_binary": str(LEAN_FFMPEG_DIR / "ffprobe")},
    "lean-nvdec": {
        "hw_decode": "cuda",
        "ffmpeg_binary": str(LEAN_NVDEC_FFMPEG_DIR / "ffmpeg"),
        "ffprobe_binary": str(LEAN_NVDEC_FFMPEG_DIR / "ffprobe"),
    },
}

CONFIGS = ("fp32 eager", "autocast", "autocast + channels_last", "autocast + channels_last + compile")


class GpuUtilisation:
    """``nvidia-smi`` sampled every 200 ms while a block runs: mean SM and NVDEC (decoder) utilisation, in %."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.sm_percent: float | None = None
        self.decoder_percent: float | None = None

    def __enter__(self) -> GpuUtilisation:
        if shutil.which("nvidia-smi"):
            query = "--query-gpu=utilization.gpu,utilization.decoder"
            self.process = subprocess.Popen(
                ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "200", "-i", "0"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        samples = []
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                sm, decoder = (float(part) for part in line.split(","))
                samples.append((sm, decoder))
        if samples:
            self.sm_percent = sum(s for s, _ in samples) / len(samples)
            self.decoder_percent = sum(d for _, d in samples) / len(samples)


def _error_text(e: BaseException) -> str:
    """One line for a result row: a MotionGuard error's code and message, else the type and first line."""
    if isinstance(e, MotionGuardError):
        return f"{e.code}: {e.message}"
    first_line = str(e).splitlines()[0][:160] if str(e) else ""
    return f"{type(e).__name__}: {first_line}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def tower_throughput(
    architecture: str,
    device: torch.device,
    batch_sizes: list[int],
    configs: list[str],
    min_seconds: float,
    warmup_calls: int,
    compile_batch_sizes: list[int] | None = None,
    deadline: float = float("inf"),
) -> list[dict[str, Any]]:
    """Frames/s of ``architecture``'s image tower per (config, batch) point.

    The compiled configuration runs only at ``compile_batch_sizes`` (each new
    shape recompiles, which costs tens of seconds for ViT-L/14); points past
    ``deadline`` (a ``time.monotonic()`` value) are recorded as skipped.
    """
    rows: list[dict[str, Any]] = []
    model, _, _ = open_clip.create_model_and_transforms(architecture, pretrained=None, device=device)
    model.eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else int(size)
    for config in configs:
        channels_last = "channels_last" in config
        use_autocast = "autocast" in config
        net = (
            model.to(memory_format=torch.channels_last)
            if channels_last
            else model.to(memory_format=torch.contiguous_format)
        )
        encode = net.encode_image
        if "compile" in config:
            encode = torch.compile(net.encode_image, dynamic=False)
        for batch in batch_sizes:
            if "compile" in config and compile_batch_sizes is not None and batch not in compile_batch_sizes:
                continue
            if time.monotonic() > deadline:
                rows.append({"model": architecture, "config": config, "batch": batch, "error": "skipped: time budget"})
                continue
            x = torch.randn(batch, 3, size, size, device=device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            try:
                with torch.inference_mode(), _autocast(device, use_autocast):
                    compile_started = time.perf_counter()
                    for _ in range(warmup_calls):
                        encode(x)
                    _sync(device)
                    warmup_seconds = time.perf_counter() - compile_started
                    calls = 0
                    started = time.perf_counter()
                    while True:
                        encode(x)
                        calls += 1
                        if calls % 4 == 0 or device.type == "cpu":
                            _sync(device)
                            if time.perf_counter() - started >= min_seconds:
                                break
                    _sync(device)
                    seconds = time.perf_counter() - started
            except torch.cuda.OutOfMemoryError:
                rows.append({"model": architecture, "config": config, "batch": batch, "error": "out of memory"})
                torch.cuda.empty_cache()
                continue
            except Exception as e:  # e.g. torch.compile failing on this stack: record it, measure the rest
                log(f"{architecture} {config} batch {batch}: {type(e).__name__}: {e}")
                rows.append({"model": architecture, "config": config, "batch": batch, "error": _error_text(e)})
                continue
            row = {
                "model": architecture,
                "config": config,
                "batch": batch,
                "frames_per_second": batch * calls / seconds,
                "calls": calls,
                "seconds": seconds,
                "warmup_seconds": warmup_seconds,
            }
            if device.type == "cuda":
                row["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 1024**3
                torch.cuda.reset_peak_memory_stats(device)
            rows.append(row)
            log(f"{architecture:9s} {config:38s} batch {batch:5d}: {row['frames_per_second']:9.1f} frames/s")
        if "compile" in config:
            torch._dynamo.reset()
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def end_to_end(
    architecture: str,
    device: torch.device,
    videos: list[Path],
    workers_list: list[int],
    batch_videos: int,
    model_batch_frames: int,
    deadline: float = float("inf"),
    sampling: str = "default",
) -> list[dict[str, Any]]:
    from detectors.loading import DetectorOptions, build_detector
    from detectors.sampling import SamplingConfig

    rows: list[dict[str, Any]] = []
    for workers in workers_list:
        if time.monotonic() > deadline:
            rows.append({"model": architecture, "decode_workers": workers, "error": "skipped: time budget"})
            continue
        detector = build_detector(
            DetectorOptions(
                model=architecture,
                pretrained="none",
                device=device.type,  # type: ignore[arg-type]
                frames=8,
                batch_size=model_batch_frames,
                sampling=SamplingConfig(decoder_threads=1 if workers > 1 else 2, **SAMPLING_VARIANTS[sampling]),
            )
        )
        list(detector.scan_many(videos[:2], decode_workers=workers, batch_videos=batch_videos))  # warm-up
        _sync(device)
        with GpuUtilisation() as utilisation:
            started = time.perf_counter()
            results = list(detector.scan_many(videos, decode_workers=workers, batch_videos=batch_videos))
            _sync(device)
            seconds = time.perf_counter() - started
        frames = sum(r.score.frames_scored for r in results if r.score is not None)
        rows.append(
            {
                "model": architecture,
                "sampling": sampling,
                "decode_workers": workers,
                "batch_videos": batch_videos,
                "videos": len(results),
                "errors": sum(1 for r in results if not r.ok),
                "frames": frames,
                "seconds": seconds,
                "videos_per_second": len(results) / seconds,
                "frames_per_second": frames / seconds,
                "hw_decode": getattr(detector.sampler, "hw_decode", "none"),
                "gpu_utilisation_percent": utilisation.sm_percent,
                "nvdec_utilisation_percent": utilisation.decoder_percent,
            }
        )
        log(f"end to end {architecture} ({sampling}) with {workers} decode workers: {frames / seconds:.1f} frames/s, "
            f"{len(results) / seconds:.2f} videos/s")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--models", default="ViT-B-32,ViT-L-14")
    parser.add_argument("--batch-sizes", default=None, help="Comma-separated (default: 64,256,1024 on a GPU).")
    parser.add_argument("--no-compile", action="store_true", help="Skip the torch.compile configuration.")
    parser.add_argument("--seconds", type=float, default=None, help="Timed seconds per point.")
    parser.add_argument("--decode-workers", default=None, help="Comma-separated (default: 1,2,4,8 on a GPU).")
    parser.add_argument("--videos", type=int, default=None, help="Videos for the end-to-end part.")
    parser.add_argument(
        "--distinct-videos",
        type=int,
        default=22,
        help="How many different corpus videos the end-to-end part cycles through (default 22).",
    )
    parser.add_argument(
        "--compile-batch-sizes",
        default=None,
        help="Batch sizes for the torch.compile configuration (default: all of --batch-sizes).",
    )
    parser.add_argument(
        "--e2e-models", default=None, help="Models for the end-to-end part (default: --models on a GPU)."
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="Stop starting new points after this long; what ran is still saved.",
    )
    parser.add_argument(
        "--e2e-sampling",
        default="default",
        help=f"Comma-separated sampling variants for the end-to-end part, of {sorted(SAMPLING_VARIANTS)}.",
    )
    parser.add_argument("--skip-tower", action="store_true", help="Only the end-to-end part.")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    variants = [v for v in args.e2e_sampling.split(",") if v]
    unknown = set(variants) - set(SAMPLING_VARIANTS)
    if unknown:
        parser.error(f"unknown --e2e-sampling {sorted(unknown)}; choose from {sorted(SAMPLING_VARIANTS)}")
    logging.getLogger("detectors").setLevel(logging.ERROR)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    models = [m for m in args.models.split(",") if m]
    default_batches = "64,256,1024" if on_gpu else "1,8"
    batch_sizes = [int(b) for b in (args.batch_sizes or default_batches).split(",")]
    seconds = args.seconds or (5.0 if on_gpu else 3.0)
    warmup = 5 if on_gpu else 1
    configs = list(CONFIGS)
    if args.no_compile or (not on_gpu and args.quick):
        configs = [c for c in configs if "compile" not in c]
    compile_batches = [int(b) for b in args.compile_batch_sizes.split(",")] if args.compile_batch_sizes else None
    deadline = time.monotonic() + args.budget_seconds if args.budget_seconds else float("inf")
    started_at, load_start = now_utc(), load_average()
    log(f"gpu_bench on {device} ({torch.cuda.get_device_name(device) if on_gpu else 'CPU'}), models {models}")

    info = machine()
    if on_gpu:
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 1024**3, 1)
    command = " ".join(["python -m benchmarks.gpu_bench", *(argv if argv is not None else sys.argv[1:])])

    def report(tower: list[dict[str, Any]], e2e: list[dict[str, Any]]) -> None:
        """Save what ran so far (a run cut short still leaves its figures)."""
        save(
            "gpu" if on_gpu else "gpu-cpu",
            {
                "started_at": started_at,
                "load_average_start": load_start,
                "machine": info,
                "device": str(device),
                "command": command,
                "tower": tower,
                "end_to_end": e2e,
            },
            args.cache_dir,
        )

    tower: list[dict[str, Any]] = []
    for architecture in [] if args.skip_tower else models:
        # On the CPU ViT-L/14 is slow: one small batch size and no compile keep the smoke run short.
        arch_batches = batch_sizes if on_gpu or architecture == models[0] else batch_sizes[:1]
        arch_configs = configs if on_gpu or architecture == models[0] else configs[:2]
        tower += tower_throughput(
            architecture, device, arch_batches, arch_configs, seconds, warmup, compile_batches, deadline
        )
        report(tower, [])

    corpus = Corpus(args.cache_dir / "corpus")
    count = args.videos or (64 if on_gpu else 4)
    videos = h264_720p_set(corpus, min(count, args.distinct_videos))
    videos = [videos[i % len(videos)] for i in range(count)]
    cores = os.cpu_count() or 1
    default_workers = [w for w in (1, 2, 4, 8, 16) if w <= cores] if on_gpu else [1, 2]
    workers_list = [int(w) for w in args.decode_workers.split(",")] if args.decode_workers else default_workers
    e2e: list[dict[str, Any]] = []
    e2e_models = [m for m in args.e2e_models.split(",") if m] if args.e2e_models else models if on_gpu else models[:1]
    for architecture, variant in [(a, v) for a in e2e_models for v in variants]:
        try:
            e2e += end_to_end(architecture, device, videos, workers_list, batch_videos=16 if on_gpu else 2,
                              model_batch_frames=256 if on_gpu else 64, deadline=deadline,
                              sampling=variant)  # fmt: skip
        except Exception as e:  # e.g. no ffmpeg on the GPU machine: keep the tower figures
            log(f"end to end {architecture}: {_error_text(e)}")
            e2e.append({"model": architecture, "error": _error_text(e)})
        report(tower, e2e)


if __name__ == "__main__":
    main()
