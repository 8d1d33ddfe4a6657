"""The naive pipeline a user would write first (the baseline for ``motionguard scan``).

    .venv/bin/python -m benchmarks.naive --model ViT-B-32 --frames 8 VIDEO...

Per video: decode every frame at full resolution with PyAV and convert each
to an RGB array (what OpenCV's ``VideoCapture.read`` does too), keep the
``--frames`` frames at the centres of equal bins, preprocess each kept frame
with open_clip's own PIL/torchvision transform (resize, centre crop, to
tensor, normalise), then one model call per video (``--per-frame``: one per
frame) and L2-normalise.  Library defaults everywhere (PyAV's decoder
threading, torch's thread count).  Same architecture, random weights, same
frame count as the scan it is compared with.  Prints one JSON line per video.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import av
import numpy as np
import open_clip
import torch
from PIL import Image


def _frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    if stream.frames:
        return int(stream.frames)
    rate = float(stream.average_rate or 25)
    if stream.duration is not None and stream.time_base is not None:
        return max(1, int(float(stream.duration * stream.time_base) * rate))
    return max(1, int((container.duration or 0) / 1_000_000 * rate))


def read_frames(path: str, frames: int) -> list[np.ndarray]:
    """Every frame decoded and converted at full resolution; the wanted ones kept."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        total = _frame_count(container, stream)
        wanted = {min(total - 1, int((k + 0.5) * total / frames)) for k in range(frames)}
        kept = []
        for index, frame in enumerate(container.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")
            if index in wanted:
                kept.append(rgb)
    return kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--per-frame", action="store_true", help="One model call per frame.")
    args = parser.parse_args(argv)

    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None)
    model.eval()
    for path in args.paths:
        started = time.perf_counter()
        frames = read_frames(path, args.frames)
        images = torch.stack([preprocess(Image.fromarray(frame)) for frame in frames])
        with torch.no_grad():
            if args.per_frame:
                features = torch.cat([model.encode_image(image[None]) for image in images])
            else:
                features = model.encode_image(images)
            features = features / features.norm(dim=-1, keepdim=True)
        row = {"source": path, "frames": len(frames), "dim": int(features.shape[-1]),
               "ms": round((time.perf_counter() - started) * 1000, 1)}  # fmt: skip
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
