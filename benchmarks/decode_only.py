"""The sampler alone: what ``motionguard scan`` spends on decoding, without the model.

    .venv/bin/python -m benchmarks.decode_only --frames 8 [--decode-workers 2] [--decoder-threads 2] VIDEO...

Runs :class:`detectors.sampling.FfmpegSampler` over the files with
``--decode-workers`` threads (each ffmpeg is a process of its own), exactly as
``scan`` does before the model.  Timed from outside like the other sides, so
``T(20) - T(2)`` gives the decode cost per video (wall, and CPU in the ffmpeg
and ffprobe processes).  Each line also gives the video's decode CPU-seconds
(its ffmpeg/ffprobe children, measured around its own sample when
``--decode-workers 1``), the frames ffmpeg decoded and the decoding mode, so
plans can be compared per video: ``--frame-seek nearest_keyframe`` (default),
``accurate`` or ``keyframe``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from concurrent.futures import ThreadPoolExecutor

from detectors.sampling import SEEK_MODES, FfmpegSampler, SamplingConfig
from detectors.types import SampledFrames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--decoder-threads", type=int, default=2)
    parser.add_argument("--skip-non-reference", action="store_true")
    parser.add_argument("--frame-seek", default="nearest_keyframe", choices=list(SEEK_MODES))
    parser.add_argument("--keyframe-tolerance", type=float, default=0.5)
    parser.add_argument("--ffmpeg", default="ffmpeg", help="The ffmpeg to decode with.")
    parser.add_argument("--ffprobe", default="ffprobe", help="The ffprobe to probe with.")
    args = parser.parse_args(argv)
    sampler = FfmpegSampler(
        SamplingConfig(
            frames=args.frames,
            decoder_threads=args.decoder_threads,
            skip_non_reference=args.skip_non_reference,
            seek=args.frame_seek,
            keyframe_tolerance=args.keyframe_tolerance,
            ffmpeg_binary=args.ffmpeg,
            ffprobe_binary=args.ffprobe,
        )
    )

    def sample(path: str) -> tuple[SampledFrames, float]:
        before = _children_cpu_seconds()
        sampled = sampler.sample(path, args.image_size)
        return sampled, _children_cpu_seconds() - before

    with ThreadPoolExecutor(args.decode_workers) as pool:
        for path, (sampled, cpu) in zip(args.paths, pool.map(sample, args.paths), strict=True):
            row = {
                "source": path,
                "frames": len(sampled),
                "frames_decoded": sampled.frames_decoded,
                "decode_mode": sampled.decode_mode,
                # Exact per video only with one decode worker (children's CPU is process-wide).
                "decode_cpu_seconds": round(cpu, 4) if args.decode_workers == 1 else None,
            }
            sys.stdout.write(json.dumps(row) + "\n")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
