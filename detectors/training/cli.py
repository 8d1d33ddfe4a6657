"""Training commands: ``embed``, ``train``, ``evaluate``, ``finetune`` and ``dataset download``.

:func:`register` adds them to the ``motionguard`` typer app.  This module only
imports typer and rich at import time; torch, open_clip, scikit-learn and the
training modules are imported inside the commands, so ``--help`` stays fast
and the scoring core never loads training code.

Exit status: 0 on success, 2 when some inputs failed (the run still finished),
3 on a usage, model or dataset problem, 130 when interrupted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from detectors.cli_options import (
    EXIT_INPUT_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    DeviceOption,
    FrameSeekOption,
    KeyframeToleranceOption,
    ModelOption,
    PretrainedOption,
    WeightsOption,
    print_error,
    stderr,
    warn_untrained,
)

if TYPE_CHECKING:
    from detectors.training.cache import VideoRecord

logger = logging.getLogger(__name__)


SeedOption = Annotated[int, typer.Option(help="Seed of the grouped train/val/test split.")]
ValFractionOption = Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of groups held out for validation.")]
TestFractionOption = Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of groups held out for test.")]


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    print_error(message, stderr)
    return typer.Exit(code)


@contextmanager
def _progress(disable: bool = False) -> Iterator[Progress]:
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=stderr,
        disable=disable or not stderr.is_terminal,
        transient=False,
    ) as progress:
        yield progress


class _StageBars:
    """Maps ``progress(stage, done, total)`` callbacks onto one rich task per stage."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int, loss: float | None = None) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, note="")
        note = "" if loss is None else f"loss {loss:.4f}"
        self.progress.update(self.tasks[stage], completed=done, total=total, note=note)


def _split_config(seed: int, val_fraction: float, test_fraction: float) -> Any:
    from detectors.training.datasets import SplitConfig

    try:
        return SplitConfig(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    except ValueError as e:
        raise _fail(str(e)) from e


def _print_errors(records: list[VideoRecord], limit: int = 20) -> None:
    if not records:
        return
    table = Table(title=f"{len(records)} video(s) could not be embedded", show_lines=False)
    for column in ("path", "code", "message"):
        table.add_column(column, overflow="fold")
    for record in records[:limit]:
        table.add_row(record.item.path, record.error_code or "", record.error_message or "")
    stderr.print(table)
    if len(records) > limit:
        stderr.print(f"... and {len(records) - limit} more (see index.json in the cache)")


# --- embed ------------------------------------------------------------------------------


def embed(
    dataset: Annotated[Path, typer.Argument(help="CSV manifest or DeepAction folder.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Cache directory (created or resumed).")],
    model: ModelOption = "clip-vit-b-32",
    pretrained: PretrainedOption = None,
    weights: WeightsOption = None,
    frames: Annotated[int, typer.Option(min=1, max=1024, help="Frames sampled per video.")] = 16,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per model call.")] = 64,
    workers: Annotated[int, typer.Option(min=1, help="Videos decoded ahead in threads.")] = 2,
    timeout_seconds: Annotated[float, typer.Option(min=0.1, help="Limit for each ffmpeg call.")] = 60.0,
    frame_seek: FrameSeekOption = "nearest_keyframe",
    keyframe_tolerance: KeyframeToleranceOption = 0.5,
) -> None:
    """Sample and embed every video once into a resumable cache (keyed by content and embedder)."""
    from detectors.embedding import EmbedderSpec
    from detectors.errors import MotionGuardError
    from detectors.sampling import FfmpegSampler, SamplingConfig
    from detectors.training.cache import EmbedCache, build_embedder, embed_dataset, identity_for
    from detectors.training.datasets import load_dataset

    try:
        data = load_dataset(dataset)
        sampling = SamplingConfig(
            frames=frames,
            max_frames=max(64, frames),
            timeout_seconds=timeout_seconds,
            seek=frame_seek,  # type: ignore[arg-type]  # checked by SamplingConfig
            keyframe_tolerance=keyframe_tolerance,
        )
        embedder = build_embedder(
            EmbedderSpec.from_names(
                model, pretrained, weights=str(weights) if weights else None,
                device=device, batch_size=batch_size,  # type: ignore[arg-type]
            )
        )  # fmt: skip
    except (MotionGuardError, ValueError) as e:
        raise _fail(str(e)) from e
    if embedder.untrained:
        warn_untrained()
    identity = identity_for(embedder, sampling)
    cache = EmbedCache(out)
    summary = data.summary()
    stderr.print(
        f"{summary['videos']} videos ({', '.join(f'{k} {v}' for k, v in summary['classes'].items())}), "
        f"{summary['groups']} groups; embedder {embedder.spec.architecture} -> {out}"
    )
    try:
        with _progress() as progress:
            task = progress.add_task("embedding", total=len(data.items), note="")
            failed = {"n": 0}

            def on_video(record: VideoRecord) -> None:
                failed["n"] += record.status == "error"
                progress.update(task, advance=1, note=f"{failed['n']} failed" if failed["n"] else "")

            run = embed_dataset(
                data, cache, embedder, FfmpegSampler(sampling), identity,
                on_video=on_video, prefetch=workers, batch_frames=batch_size,
            )  # fmt: skip
    except KeyboardInterrupt as e:
        stderr.print("[yellow]interrupted[/]: finished videos are cached; rerun the same command to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from e
    _print_errors(run.errors)
    stderr.print(
        f"{run.embedded} embedded, {run.reused} reused from the cache, {run.failed} failed; index {run.index_path}"
    )
    if embedder.untrained:
        warn_untrained()
    raise typer.Exit(EXIT_INPUT_ERRORS if run.failed else EXIT_OK)


# --- train ------------------------------------------------------------------------------


def train(
    cache_dir: Annotated[
        Path, typer.Argument(metavar="CACHE", help="Embedding cache from `embed`.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    classifier: Annotated[
        str, typer.Option(help="svm-rbf, svm-linear, svm-poly, svm-multiclass or prompt.")
    ] = "svm-rbf",
    seed: SeedOption = 0,
    val_fraction: ValFractionOption = 0.15,
    test_fraction: TestFractionOption = 0.2,
    search: Annotated[bool, typer.Option(help="Grid-search the SVM hyper-parameters (group-aware CV).")] = True,
    cv_folds: Annotated[int, typer.Option(min=2, help="Folds of the grid search and of the calibration.")] = 3,
    c: Annotated[float | None, typer.Option("--C", help="SVM C (with --no-search).")] = None,
    gamma: Annotated[str | None, typer.Option(help="RBF/poly gamma: a number or 'scale' (with --no-search).")] = None,
    degree: Annotated[int | None, typer.Option(help="Polynomial degree (with --no-search).")] = None,
    kernel: Annotated[str, typer.Option(help="Kernel of the multi-class SVM: rbf, linear or poly.")] = "rbf",
    calibration: Annotated[str, typer.Option(help="Probability calibration: sigmoid or isotonic.")] = "sigmoid",
    name: Annotated[str | None, typer.Option(help="Bundle name (default: embedder + classifier).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing bundle directory.")] = False,
    device: DeviceOption = "auto",
) -> None:
    """Fit a head on a cache's training split; record the data summary and validation metrics."""
    from detectors.bundle import save_bundle
    from detectors.embedding import ClipEmbedder, EmbedderSpec
    from detectors.errors import MotionGuardError
    from detectors.training.cache import EmbedCache, build_embedder
    from detectors.training.train import TrainConfig, train_head

    head_params: dict[str, Any] = {}
    if c is not None:
        head_params["C"] = c
    if gamma is not None:
        head_params["gamma"] = gamma if gamma == "scale" else float(gamma)
    if degree is not None:
        head_params["degree"] = degree
    try:
        config = TrainConfig(
            classifier=classifier,  # type: ignore[arg-type]
            split=_split_config(seed, val_fraction, test_fraction),
            search=search and not head_params,
            cv_folds=cv_folds,
            head_params=head_params,
            calibration=calibration,  # type: ignore[arg-type]
            multiclass_kernel=kernel,  # type: ignore[arg-type]
        )
    except ValueError as e:
        raise _fail(str(e)) from e

    def text_embedder(spec: EmbedderSpec) -> ClipEmbedder:
        import dataclasses

        return build_embedder(dataclasses.replace(spec, device=device))  # type: ignore[arg-type]

    stderr.print(f"training {classifier} on {cache_dir} ...")
    try:
        trained = train_head(EmbedCache(cache_dir), config, text_embedder=text_embedder)
        if trained.summary["untrained_embedder"]:
            warn_untrained()
        bundle_name = name or f"{trained.embedder.model}+{classifier}"
        path = save_bundle(
            out,
            name=bundle_name,
            embedder=trained.embedder,
            classifier=trained.classifier,
            classifier_kind=trained.kind,
            frames=trained.frames,
            prompts=trained.prompts,
            training=trained.summary,
            overwrite=overwrite,
        )
    except (MotionGuardError, ValueError) as e:
        raise _fail(str(e)) from e
    data = trained.summary["data"]
    table = Table(title=f"bundle {path}")
    for column in ("split", "videos", "groups", "classes"):
        table.add_column(column)
    for split in ("train", "val", "test"):
        row = data[split]
        table.add_row(split, str(row["videos"]), str(row["groups"]), json.dumps(row["classes"]))
    stderr.print(table)
    if trained.summary["search"]:
        search_result = trained.summary["search"]
        stderr.print(
            f"grid search: best {search_result['best_params']} "
            f"(mean balanced accuracy {search_result['best_mean_balanced_accuracy']} "
            f"over {search_result['folds']} group folds)"
        )
    line = trained.summary["validation_headline"]
    if line:
        cal = trained.summary["validation"]["calibration"]
        stderr.print(
            f"validation: {line['videos']} videos, frame accuracy {line['frame_accuracy']}, "
            f"video accuracy {line['video_accuracy']}, video ROC-AUC {line['video_roc_auc']}, "
            f"ECE {cal.get('ece')}"
        )
    else:
        stderr.print("no validation split (val fraction 0 or too few groups)")
    if trained.summary["untrained_embedder"]:
        warn_untrained()
    raise typer.Exit(EXIT_OK)


# --- evaluate -----------------------------------------------------------------------------


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory from `train`.", show_default=False)],
    dataset: Annotated[
        Path, typer.Argument(help="CSV manifest, DeepAction folder or embedding cache.", show_default=False)
    ],
    report: Annotated[Path, typer.Option("--report", "-r", help="Report directory (JSON, Markdown, PNG).")],
    cache_dir: Annotated[
        Path | None, typer.Option("--cache", help="Embedding cache to use (default: REPORT/embed-cache).")
    ] = None,
    split: Annotated[str, typer.Option(help="test (the bundle's held-out groups), val or all.")] = "test",
    scales: Annotated[str, typer.Option(help="Down-scaling factors for robustness, comma-separated.")] = "0.5,0.25",
    crf: Annotated[str, typer.Option(help="H.264 CRF values for robustness, comma-separated.")] = "28,36",
    robustness: Annotated[bool, typer.Option(help="Re-run on re-scaled and re-encoded copies.")] = True,
    leave_one_out: Annotated[bool, typer.Option(help="Leave-one-generator-out refits (SVM heads).")] = True,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per model call.")] = 64,
    workers: Annotated[int, typer.Option(min=1, help="Videos re-encoded / decoded ahead in threads.")] = 2,
    timeout_seconds: Annotated[float, typer.Option(min=0.1, help="Limit for each ffmpeg call.")] = 120.0,
    frame_seek: FrameSeekOption = "nearest_keyframe",
    keyframe_tolerance: KeyframeToleranceOption = 0.5,
) -> None:
    """Measure a bundle: metrics, plots, robustness, unseen generators (laid out like the paper)."""
    import dataclasses

    from detectors.bundle import load_bundle
    from detectors.errors import MotionGuardError
    from detectors.sampling import FfmpegSampler, SamplingConfig
    from detectors.training.cache import EmbedCache, build_embedder, identity_for
    from detectors.training.datasets import load_dataset
    from detectors.training.evaluate import EvaluateConfig, cache_path_for, evaluate_bundle
    from detectors.training.report import write_report

    try:
        loaded = load_bundle(bundle)
        given = EmbedCache(dataset)
        if dataset.is_dir() and given.is_cache():
            source = str(given.read_index().dataset["source"])
            data = load_dataset(source)
            cache = EmbedCache(cache_dir) if cache_dir else given
        else:
            data = load_dataset(dataset)
            cache = EmbedCache(cache_dir or cache_path_for(report))
        config = EvaluateConfig(
            split=split,  # type: ignore[arg-type]
            scales=_floats(scales),
            crfs=tuple(int(v) for v in _floats(crf)),
            robustness=robustness,
            leave_one_out=leave_one_out,
            workers=workers,
            timeout_seconds=timeout_seconds,
        )
        spec = dataclasses.replace(loaded.embedder, device=device, batch_size=batch_size)  # type: ignore[arg-type]
        embedder = build_embedder(spec)
    except (MotionGuardError, ValueError) as e:
        raise _fail(str(e)) from e
    if embedder.untrained:
        warn_untrained()
    try:
        sampling = SamplingConfig(
            frames=loaded.frames,
            max_frames=max(64, loaded.frames),
            timeout_seconds=timeout_seconds,
            seek=frame_seek,  # type: ignore[arg-type]  # checked by SamplingConfig
            keyframe_tolerance=keyframe_tolerance,
        )
    except ValueError as e:
        raise _fail(str(e)) from e
    identity = identity_for(embedder, sampling)
    try:
        with _progress() as progress:
            result, plots = evaluate_bundle(
                loaded, data, cache, embedder, FfmpegSampler(sampling), identity, config,
                progress=_StageBars(progress),
            )  # fmt: skip
        write_report(report, result, plots)
    except (MotionGuardError, ValueError) as e:
        raise _fail(str(e)) from e
    except KeyboardInterrupt as e:
        stderr.print("[yellow]interrupted[/]: embeddings done so far are cached; rerun to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from e
    clean = result["clean"]
    stderr.print(
        f"{result['evaluated_split']}: {clean['video'].get('n', 0)} videos, "
        f"video accuracy {clean['video'].get('accuracy')}, frame accuracy {clean['frame'].get('accuracy')}, "
        f"video ROC-AUC {clean['video'].get('roc_auc')}; report in {report}"
    )
    if result["embedding_errors"]:
        stderr.print(f"[yellow]{len(result['embedding_errors'])} video(s) could not be embedded[/] (see report.json)")
    if embedder.untrained:
        warn_untrained()
    raise typer.Exit(EXIT_INPUT_ERRORS if result["embedding_errors"] else EXIT_OK)


# --- finetune ------------------------------------------------------------------------------


def finetune(
    dataset: Annotated[Path, typer.Argument(help="CSV manifest or DeepAction folder.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Weights file to write (.safetensors; spec beside it).")],
    base: Annotated[str, typer.Option(help="Base model NAME[:TAG], e.g. ViT-B-32:openai or tiny-test.")] = (
        "clip-vit-b-32"
    ),
    weights: Annotated[Path | None, typer.Option(help="Start from these .safetensors weights.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 3,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")] = None,
    batch_size: Annotated[int, typer.Option(min=2)] = 64,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate.")] = 1e-5,
    weight_decay: Annotated[float, typer.Option(min=0.0)] = 0.1,
    warmup_steps: Annotated[int, typer.Option(min=0)] = 50,
    unfreeze_last: Annotated[
        int | None, typer.Option(min=0, help="Train only the last K image blocks (+ head); default all.")
    ] = None,
    train_text: Annotated[bool, typer.Option(help="Also train the text tower.")] = False,
    frames_per_video: Annotated[int, typer.Option(min=1)] = 8,
    seed: SeedOption = 0,
    val_fraction: ValFractionOption = 0.15,
    test_fraction: TestFractionOption = 0.2,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 100,
    work_dir: Annotated[Path | None, typer.Option(help="Frames and checkpoints (default: OUT.work/).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from a matching checkpoint.")] = True,
    device: DeviceOption = "auto",
    timeout_seconds: Annotated[float, typer.Option(min=0.1, help="Limit for each ffmpeg call.")] = 60.0,
    frame_seek: FrameSeekOption = "nearest_keyframe",
    keyframe_tolerance: KeyframeToleranceOption = 0.5,
) -> None:
    """Contrastively fine-tune an open_clip model on labelled frames (FT-CLIP)."""
    from detectors.errors import MotionGuardError
    from detectors.sampling import FfmpegSampler, SamplingConfig
    from detectors.training.datasets import load_dataset
    from detectors.training.finetune import FinetuneConfig
    from detectors.training.finetune import finetune as run_finetune

    try:
        data = load_dataset(dataset)
        config = FinetuneConfig(
            base=base,
            base_weights=str(weights) if weights else None,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            unfreeze_last=unfreeze_last,
            train_text=train_text,
            frames_per_video=frames_per_video,
            seed=seed,
            checkpoint_every=checkpoint_every,
            device=device,  # type: ignore[arg-type]
            split=_split_config(seed, val_fraction, test_fraction),
        )
        if config.embedder_spec().untrained:
            warn_untrained()
            stderr.print("[yellow]fine-tuning a randomly initialised model: useful for tests only[/]")
        sampler = FfmpegSampler(
            SamplingConfig(
                frames=frames_per_video,
                max_frames=max(64, frames_per_video),
                timeout_seconds=timeout_seconds,
                seek=frame_seek,  # type: ignore[arg-type]  # checked by SamplingConfig
                keyframe_tolerance=keyframe_tolerance,
            )
        )
        with _progress() as progress:
            result = run_finetune(
                data, sampler, out, config, work_dir=work_dir, progress=_StageBars(progress), resume=resume
            )
    except (MotionGuardError, ValueError) as e:
        raise _fail(str(e)) from e
    except KeyboardInterrupt as e:
        stderr.print("[yellow]interrupted[/]: rerun the same command to resume from the last checkpoint")
        raise typer.Exit(EXIT_INTERRUPTED) from e
    spec = result.spec
    stderr.print(
        f"wrote {result.weights} ({spec['steps']} steps, "
        f"loss {spec['initial_loss']} -> {spec['final_loss']}) "
        f"and {result.spec_path}; use with: embed/scan {spec['load_with']['cli']}"
    )
    raise typer.Exit(EXIT_OK)


# --- dataset download ----------------------------------------------------------------------


def download(
    name: Annotated[str, typer.Argument(help="Dataset name (deepaction).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to download into.")] = Path("data/deepaction"),
    revision: Annotated[str | None, typer.Option(help="Dataset revision (branch, tag or commit).")] = None,
) -> None:
    """Download a public dataset from the Hugging Face hub (needs network access)."""
    from detectors.errors import MotionGuardError
    from detectors.training.download import KNOWN_DATASETS, download_dataset

    entry = KNOWN_DATASETS.get(name)
    if entry is not None:
        stderr.print(f"{entry.description}\nlicence: {entry.licence}")
    try:
        path = download_dataset(name, out, revision=revision)
    except MotionGuardError as e:
        raise _fail(str(e)) from e
    stderr.print(f"downloaded to {path}; next: motionguard embed {path} --out CACHE")
    raise typer.Exit(EXIT_OK)


def register(app: typer.Typer) -> None:
    """Add the training commands and the ``dataset`` group to ``app``."""
    app.command()(embed)
    app.command()(train)
    app.command()(evaluate)
    app.command()(finetune)
    dataset_app = typer.Typer(help="Public datasets.", no_args_is_help=True)
    dataset_app.command("download")(download)
    app.add_typer(dataset_app, name="dataset")
