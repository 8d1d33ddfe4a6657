"""The floor: the model alone on already-preprocessed frames (no decoding at all).

    .venv/bin/python -m benchmarks.floor --model ViT-B-32 --videos 20 --frames 8 [--batch-frames 8]

Loads the same architecture the same way ``motionguard scan`` does (open_clip,
random weights, float32 on the CPU, ``torch.inference_mode``) and runs
``model.encode_image`` on ``videos * frames`` frames that are already resized,
cropped and normalised float tensors, ``--batch-frames`` per call (default:
one call per video), then L2-normalises.  Timed from outside as a whole
process, like the scan, so start-up cancels out in ``T(20) - T(2)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import open_clip
import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--videos", type=int, required=True)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-frames", type=int, default=None, help="Frames per model call (default: --frames).")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args(argv)

    model, _, _ = open_clip.create_model_and_transforms(args.model, pretrained=None)
    model.eval()
    total = args.videos * args.frames
    batch = args.batch_frames or args.frames
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(batch, 3, args.image_size, args.image_size, generator=generator)
    started = time.perf_counter()
    done = 0
    with torch.inference_mode():
        while done < total:
            n = min(batch, total - done)
            features = F.normalize(model.encode_image(frames[:n]).float(), dim=-1)
            done += n
    sys.stdout.write(
        json.dumps({"frames": done, "dim": int(features.shape[-1]), "seconds": time.perf_counter() - started}) + "\n"
    )


if __name__ == "__main__":
    main()
