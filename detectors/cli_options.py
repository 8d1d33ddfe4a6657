"""Options, exit codes and error output shared by every ``motionguard`` command.

``scan`` (:mod:`detectors.cli`) and ``embed``/``train``/``evaluate``/``finetune``
(:mod:`detectors.training.cli`) take the same model and sampling options; they are
defined once here so their names, help and checks cannot drift apart.

Exit status of the commands: 0 success, 2 some inputs failed (the run still
finished), 3 a usage, model or dataset problem, 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

EXIT_OK = 0
EXIT_INPUT_ERRORS = 2
EXIT_USAGE = 3
EXIT_INTERRUPTED = 130

stderr = Console(stderr=True)


def configure_logging(level: str) -> None:
    """Configure logging once, at the entry point."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def print_error(message: object, console: Console = stderr) -> None:
    """Print ``error: MESSAGE`` as one line (never wrapped to the terminal, no markup in MESSAGE)."""
    console.print(Text.assemble(("error:", "bold red"), " ", str(message)), soft_wrap=True)


def share_cores_with_decoders() -> None:
    """Before torch loads: let the model's idle OpenMP threads sleep instead of spinning.

    Called by the ``motionguard`` entry point.  ``scan`` and the worker run the model
    while ffmpeg processes decode the next videos on the same cores; OpenMP's default
    keeps idle threads spinning for the next parallel region, which takes those cores
    from ffmpeg.  Passive waiting cost about 10% less CPU and 6% less time per video in
    ``scan`` on 2 cores (the closing note of issue 12 has the runs).  An explicit
    ``OMP_WAIT_POLICY`` wins; once torch is loaded it is too late, and nothing changes.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def warn_untrained() -> None:
    stderr.print(
        "[bold white on red] WARNING [/] [bold red]untrained model: verdicts are meaningless[/] "
        "(random weights; use --pretrained TAG, --weights FILE or --bundle DIR on a machine with the model)"
    )


ModelOption = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Preset (clip-vit-b-32, clip-vit-l-14, tiny-test, ...) or open_clip architecture."
    ),
]
PretrainedOption = Annotated[
    str | None,
    typer.Option(help="open_clip pretrained tag (e.g. openai), or 'none' for random weights (testing only)."),
]
WeightsOption = Annotated[
    Path | None, typer.Option(help="Fine-tuned (FT-CLIP) .safetensors weights for --model's architecture.")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
FrameSeekOption = Annotated[
    str,
    typer.Option(
        help="Which frame each wanted time gets: nearest_keyframe (the nearest keyframe within the tolerance, "
        "else the frame within it cheapest to decode; the default of scan and the worker), accurate (the frame "
        "on screen) or keyframe (the keyframe at or before)."
    ),
]
KeyframeToleranceOption = Annotated[
    float,
    typer.Option(
        min=0.0, max=0.5, help="nearest_keyframe: how far a keyframe may be, as a fraction of the frame spacing."
    ),
]
FfmpegOption = Annotated[
    str,
    typer.Option(
        "--ffmpeg",
        help="The ffmpeg that decodes (name on PATH or path), e.g. scripts/build-ffmpeg.sh's lean static build.",
    ),
]
FfprobeOption = Annotated[
    str, typer.Option("--ffprobe", help="The ffprobe that reads streams and packet indexes (same build as --ffmpeg).")
]
HwDecodeOption = Annotated[
    str,
    typer.Option(
        help="Where video is decoded: none (CPU) or cuda (NVDEC, where the host can; else the CPU, with a warning).",
    ),
]
