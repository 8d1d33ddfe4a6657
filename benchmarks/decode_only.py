"""The sampler alone: what ``motionguard scan`` spends on decoding, without the model.

    .venv/bin/python -m benchmarks.decode_only --frames 8 [--decode-workers 2] [--decoder-threads 2] VIDEO...

Runs :class:`detectors.sampling.FfmpegSampler` over the files with
``--decode-workers`` threads (each ffmpeg is a process of its own), exactly as
``scan`` does before the model.  Timed from outside like the other sides, so
``T(20) - T(2)`` gives the decode cost per video (wall, and CPU in the ffmpeg
and ffprobe processes).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from detectors.sampling import FfmpegSampler, SamplingConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--decoder-threads", type=int, default=2)
    parser.add_argument("--skip-non-reference", action="store_true")
    args = parser.parse_args(argv)
    sampler = FfmpegSampler(
        SamplingConfig(
            frames=args.frames, decoder_threads=args.decoder_threads, skip_non_reference=args.skip_non_reference
        )
    )
    with ThreadPoolExecutor(args.decode_workers) as pool:
        for path, sampled in zip(
            args.paths, pool.map(lambda p: sampler.sample(p, args.image_size), args.paths), strict=True
        ):
            sys.stdout.write(json.dumps({"source": path, "frames": len(sampled)}) + "\n")


if __name__ == "__main__":
    main()
