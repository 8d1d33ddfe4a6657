"""``motionguard`` commands of the scoring core: ``scan``, and :func:`create_app`, which adds the
training commands of :mod:`detectors.training.cli`.

The streaming commands (``worker``, ``kafka``, ``submit``...) are added by
``streamer.cli``, which owns the console entry point.  Heavy imports (torch,
open_clip) happen inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from detectors import __version__
from detectors.cli_options import (
    EXIT_INPUT_ERRORS,
    EXIT_OK,
    EXIT_USAGE,
    DeviceOption,
    FfmpegOption,
    FfprobeOption,
    FrameSeekOption,
    HwDecodeOption,
    KeyframeToleranceOption,
    ModelOption,
    PretrainedOption,
    WeightsOption,
    configure_logging,
    print_error,
    stderr,
    warn_untrained,
)

logger = logging.getLogger(__name__)

_VERDICT_STYLE = {"ai_generated": "bold red", "needs_review": "yellow", "real": "green", "error": "magenta"}


def _root(
    log_level: Annotated[str, typer.Option(help="Logging level: debug, info, warning, error.")] = "warning",
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    configure_logging(log_level)
    if version:
        typer.echo(f"motionguard {__version__}")
        raise typer.Exit(EXIT_OK)


BundleOption = Annotated[
    Path | None, typer.Option("--bundle", "-b", help="Model bundle directory (overrides --model/--pretrained).")
]


def provenance_summary(provenance: dict[str, Any]) -> str:
    """``untrusted AI (Google LLC)``, ``invalid: assertion.bmffHash.mismatch``, or empty for none."""
    if not provenance["present"]:
        return ""
    state = provenance["state"]
    if state in ("invalid", "unreadable"):
        return f"{state}: {', '.join(provenance['problems'])}"
    claim = "AI" if provenance["ai_declared"] else (provenance["digital_source_type"] or "").rsplit("/", 1)[-1]
    issuer = f" ({provenance['issuer']})" if provenance["issuer"] else ""
    return f"{state} {claim}".strip() + issuer


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="MotionGuard verdicts", show_lines=False)
    # The provenance column only when some input carries Content Credentials: terminals are narrow.
    with_provenance = any(row["provenance"]["present"] for row in rows)
    columns = ("source", "verdict", "score", "frames", "generator", "ms", "provenance", "error")
    for column in columns if with_provenance else tuple(c for c in columns if c != "provenance"):
        table.add_column(column, overflow="fold")
    for row in rows:
        generator = ", ".join(f"{g['name']} {g['probability']:.2f}" for g in row["generator"] or [])
        error = row["error"]
        cells = [
            row["source"],
            f"[{_VERDICT_STYLE.get(row['verdict'], '')}]{row['verdict']}[/]"
            + (" by provenance" if row["decided_by"] == "provenance" else ""),
            "" if row["score"] is None else f"{row['score']:.3f}",
            str(row["frames_scored"]),
            generator,
            f"{row['timings_ms'].get('total', 0):.0f}",
            provenance_summary(row["provenance"]),
            "" if error is None else f"{error['code']}: {error['message']}",
        ]
        if not with_provenance:
            del cells[6]
        table.add_row(*cells)
    Console().print(table)


def scan(
    paths: Annotated[list[Path], typer.Argument(help="Video files to score.", show_default=False)],
    bundle: BundleOption = None,
    model: ModelOption = "clip-vit-b-32",
    pretrained: PretrainedOption = None,
    weights: WeightsOption = None,
    frames: Annotated[int | None, typer.Option(min=1, max=1024, help="Frames sampled per video.")] = None,
    policy: Annotated[str | None, typer.Option(help="Policy name from the bundle.")] = None,
    flag_threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Score at which to flag.")] = None,
    review_threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Score at which to ask for review.")
    ] = None,
    aggregation: Annotated[str | None, typer.Option(help="vote (majority, the paper) or mean.")] = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per model call.")] = 64,
    timeout_seconds: Annotated[float, typer.Option(min=0.1, help="Limit for each ffmpeg call.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input per line.")] = False,
    decode_workers: Annotated[
        int, typer.Option(min=1, help="Videos decoded in parallel (one ffmpeg process each).")
    ] = 2,
    decoder_threads: Annotated[int, typer.Option(min=1, help="Threads per ffmpeg decoder.")] = 2,
    batch_videos: Annotated[
        int, typer.Option(min=1, help="Already decoded videos whose frames may share one model call.")
    ] = 1,
    skip_non_reference: Annotated[
        bool,
        typer.Option(
            help="Let H.264/H.265 skip non-reference frames: less decoding, each frame the first "
            "reference frame at or after its time."
        ),
    ] = False,
    frame_seek: FrameSeekOption = "nearest_keyframe",
    keyframe_tolerance: KeyframeToleranceOption = 0.5,
    hw_decode: HwDecodeOption = "none",
    ffmpeg_binary: FfmpegOption = "ffmpeg",
    ffprobe_binary: FfprobeOption = "ffprobe",
    trust_anchor: Annotated[
        list[Path] | None,
        typer.Option(help="PEM file of C2PA trust anchors (repeatable); none by default."),
    ] = None,
    capture_claim_clears: Annotated[
        bool | None,
        typer.Option(
            help="Let a trusted, intact C2PA camera-capture claim lower a content flag to real "
            "(default: the policy's, off)."
        ),
    ] = None,
) -> None:
    """Score video files as real or AI-generated.

    Exit status: 0 when every input was scored, 2 when any input failed, 3 on
    a usage or model problem.
    """
    from detectors.errors import MotionGuardError
    from detectors.loading import DetectorOptions, build_detector
    from detectors.provenance import ProvenanceConfig
    from detectors.sampling import SamplingConfig

    try:
        detector = build_detector(
            DetectorOptions(
                bundle=str(bundle) if bundle else None,
                model=model,
                pretrained=pretrained,
                weights=str(weights) if weights else None,
                device=device,  # type: ignore[arg-type]
                batch_size=batch_size,
                frames=frames,
                flag_threshold=flag_threshold,
                review_threshold=review_threshold,
                aggregation=aggregation,
                provenance=ProvenanceConfig(trust_anchor_paths=tuple(str(p) for p in trust_anchor or ())),
                capture_claim_clears=capture_claim_clears,
                sampling=SamplingConfig(
                    timeout_seconds=timeout_seconds,
                    decoder_threads=decoder_threads,
                    skip_non_reference=skip_non_reference,
                    seek=frame_seek,  # type: ignore[arg-type]  # checked by SamplingConfig
                    keyframe_tolerance=keyframe_tolerance,
                    hw_decode=hw_decode,  # type: ignore[arg-type]  # checked by SamplingConfig
                    ffmpeg_binary=ffmpeg_binary,
                    ffprobe_binary=ffprobe_binary,
                ),
            )
        )
    except (MotionGuardError, ValueError) as e:
        print_error(e)
        raise typer.Exit(EXIT_USAGE) from e
    if detector.model.untrained:
        warn_untrained()

    rows: list[dict[str, Any]] = []
    failures = 0
    sources = [str(p) for p in paths]
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        disable=as_json or not stderr.is_terminal,
        transient=True,
    ) as progress:
        task = progress.add_task("scanning", total=len(sources))
        results = detector.scan_many(sources, policy=policy, decode_workers=decode_workers, batch_videos=batch_videos)
        for result in results:
            row = result.to_dict()
            failures += not result.ok
            progress.advance(task)
            if as_json:
                sys.stdout.write(json.dumps(row) + "\n")
                sys.stdout.flush()
            else:
                rows.append(row)
    if not as_json:
        _print_table(rows)
        scored = len(sources) - failures
        stderr.print(f"{scored} scored, {failures} failed, model {detector.model.version}")
    if detector.model.untrained and not as_json:
        warn_untrained()
    raise typer.Exit(EXIT_INPUT_ERRORS if failures else EXIT_OK)


def create_app() -> typer.Typer:
    """The scoring core's command line: ``scan`` and the training commands (``streamer.cli`` adds the rest)."""
    from detectors.training.cli import register as register_training

    app = typer.Typer(
        name="motionguard",
        help="MotionGuard: tell filmed human motion from text-to-video generations.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    app.callback()(_root)
    app.command()(scan)
    register_training(app)
    return app
