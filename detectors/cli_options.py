"""Options and exit codes shared by every ``motionguard`` command that loads a model.

``scan`` (:mod:`detectors.cli`) and ``embed``/``train``/``evaluate``/``finetune``
(:mod:`detectors.training.cli`) take the same model and sampling options; they are
defined once here so their names, help and checks cannot drift apart.

Exit status of the commands: 0 success, 2 some inputs failed (the run still
finished), 3 a usage, model or dataset problem, 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EXIT_OK = 0
EXIT_INPUT_ERRORS = 2
EXIT_USAGE = 3
EXIT_INTERRUPTED = 130

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
        "else the exact frame; cheapest; the default of scan and the worker), accurate (the frame on screen) "
        "or keyframe (the keyframe at or before)."
    ),
]
KeyframeToleranceOption = Annotated[
    float,
    typer.Option(
        min=0.0, max=0.5, help="nearest_keyframe: how far a keyframe may be, as a fraction of the frame spacing."
    ),
]
