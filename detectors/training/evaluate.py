"""Evaluate a bundle on a dataset: clean, robustness and leave-one-generator-out.

1. **Clean**: the held-out split (the groups the bundle recorded as ``test``), or
   the whole dataset when none of its groups took part in training.  Frame- and
   video-level accuracy, precision, recall, F1, ROC-AUC, per-generator accuracy,
   confusion matrix, calibration (ECE, Brier), generator attribution for
   multi-class heads.
2. **Robustness**: the same videos down-scaled (default 1/2 and 1/4 of each
   side, re-encoded at high quality) and re-encoded with H.264 (default CRF 28
   and 36) through ffmpeg, sampled and embedded again.  Re-runs are cached
   under the source's content hash plus the condition's name.
3. **Leave one generator out** (SVM heads): for every generator in the training
   split, refit the head with the bundle's hyper-parameters on the training
   split without that generator, then measure how many of that generator's
   held-out videos it still calls AI - the paper's unseen-generator question.
4. **Provenance**, kept apart: every metric above is the content detector's
   alone.  The ``provenance`` section reads each evaluated video's C2PA Content
   Credentials, applies the bundle's default policy
   (:func:`detectors.voting.conclude`) and reports the videos decided by
   provenance and those decided by content separately, so a dataset of signed
   clips never inflates the content detector's accuracy.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detectors.bundle import ModelBundle
from detectors.errors import CorruptVideoError, DecodeTimeoutError, FfmpegNotFoundError, MotionGuardError
from detectors.heads import SvmHead
from detectors.provenance import PROVENANCE_STATES, ProvenanceReader, ProvenanceSource
from detectors.training.cache import (
    EmbedCache,
    EmbeddedVideos,
    EmbeddingIdentity,
    VideoRecord,
    embed_dataset,
    prefetch_map,
)
from detectors.training.datasets import Dataset
from detectors.training.metrics import Predictions, evaluate_predictions, headline, predict
from detectors.types import AI_LABEL, REAL_LABEL, Embedder, FrameSampler, SampledFrames
from detectors.voting import Policy, conclude

logger = logging.getLogger(__name__)

EvalSplit = Literal["test", "val", "all"]
#: Called as ``progress(stage, done, total)``.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Transform:
    """A robustness condition: ``scale`` (fraction of each side) or ``crf`` (H.264 quality)."""

    kind: Literal["scale", "crf"]
    value: float

    @property
    def name(self) -> str:
        if self.kind == "scale":
            return f"scale-{self.value:g}"
        return f"h264-crf{int(self.value)}"

    @property
    def label(self) -> str:
        if self.kind == "scale":
            return f"down-scaled x{self.value:g}"
        return f"H.264 CRF {int(self.value)}"

    def ffmpeg_args(self) -> list[str]:
        if self.kind == "scale":
            # Even sizes for yuv420p; high-quality encode so that the resolution is what changes.
            size = f"max(2\\,trunc(iw*{self.value:g}/2)*2):max(2\\,trunc(ih*{self.value:g}/2)*2)"
            return ["-vf", f"scale={size}:flags=area", "-c:v", "libx264", "-crf", "18"]
        return ["-c:v", "libx264", "-crf", str(int(self.value))]


@dataclass(frozen=True)
class EvaluateConfig:
    split: EvalSplit = "test"
    scales: tuple[float, ...] = (0.5, 0.25)
    crfs: tuple[int, ...] = (28, 36)
    robustness: bool = True
    leave_one_out: bool = True
    workers: int = 2
    timeout_seconds: float = 300.0
    ffmpeg_binary: str = "ffmpeg"

    def __post_init__(self) -> None:
        if self.split not in ("test", "val", "all"):
            raise ValueError(f"split must be test, val or all, got {self.split!r}")
        for scale in self.scales:
            if not 0.0 < scale < 1.0:
                raise ValueError(f"scales must be within (0, 1), got {scale}")
        for crf in self.crfs:
            if not 0 <= crf <= 51:
                raise ValueError(f"H.264 CRF must be within [0, 51], got {crf}")

    @property
    def transforms(self) -> tuple[Transform, ...]:
        if not self.robustness:
            return ()
        return tuple(Transform("scale", s) for s in self.scales) + tuple(Transform("crf", c) for c in self.crfs)


def transcode(
    source: str, target: str, transform: Transform, *, timeout_seconds: float, ffmpeg: str = "ffmpeg"
) -> None:
    """Write ``source`` re-scaled or re-encoded to ``target`` (H.264 MP4, no audio)."""
    argv = [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", source, "-map", "0:v:0",
        *transform.ffmpeg_args(), "-preset", "veryfast", "-pix_fmt", "yuv420p", "-an", "-f", "mp4", target,
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_seconds, check=False)
    except FileNotFoundError as e:
        raise FfmpegNotFoundError(f"the ffmpeg program was not found ({ffmpeg!r})") from e
    except subprocess.TimeoutExpired as e:
        raise DecodeTimeoutError(f"re-encoding ({transform.label}) took longer than {timeout_seconds:g} s") from e
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise CorruptVideoError(f"re-encoding ({transform.label}) failed: {lines[-1] if lines else 'no message'}")


# --- choosing what to evaluate ---------------------------------------------------------


def bundle_groups(training: Mapping[str, Any] | None) -> dict[str, set[str]]:
    """The groups a bundle's training recorded per split (empty sets when unknown)."""
    data = (training or {}).get("data") or {}
    return {split: set((data.get(split) or {}).get("group_names") or []) for split in ("train", "val", "test")}


def select_records(
    records: Sequence[VideoRecord], training: Mapping[str, Any] | None, split: EvalSplit
) -> tuple[list[VideoRecord], str]:
    """The records to evaluate on, and a description of that choice."""
    groups = bundle_groups(training)
    known = set().union(*groups.values())
    present = {r.item.group for r in records}
    if split == "all":
        if present & groups["train"]:
            logger.warning("evaluating on all videos, including the ones the head was trained on")
            return list(records), "all (includes training groups: optimistic)"
        return list(records), "all"
    if not present & known:
        return list(records), "all (no group of this dataset was used in training)"
    chosen = [r for r in records if r.item.group in groups[split]]
    if not chosen:
        raise ValueError(
            f"none of this dataset's videos are in the bundle's {split} split; "
            "pass the dataset the bundle was trained on, or --split all"
        )
    return chosen, split


# --- embedding variants ------------------------------------------------------------------


def embed_variant(
    records: Sequence[VideoRecord],
    transform: Transform,
    cache: EmbedCache,
    embedder: Embedder,
    sampler: FrameSampler,
    identity: EmbeddingIdentity,
    config: EvaluateConfig,
    progress: ProgressFn | None = None,
) -> tuple[EmbeddedVideos, int]:
    """Re-encode, sample and embed ``records`` under ``transform``; return the set and the error count."""
    todo = [r for r in records if r.sha256 is not None and not cache.has(identity, r.sha256, transform.name)]
    errors = 0
    image_size, resize_mode = embedder.image_size, embedder.resize_mode

    def work(record: VideoRecord) -> SampledFrames | MotionGuardError:
        with tempfile.TemporaryDirectory(prefix="mg-robust-") as scratch:
            target = os.path.join(scratch, "variant.mp4")
            try:
                transcode(
                    record.item.path, target, transform,
                    timeout_seconds=config.timeout_seconds, ffmpeg=config.ffmpeg_binary,
                )  # fmt: skip
                return sampler.sample(target, image_size, resize_mode=resize_mode)
            except MotionGuardError as e:
                return e

    done = len(records) - len(todo)
    if progress is not None:
        progress(transform.label, done, len(records))
    for record, sampled in zip(todo, prefetch_map(work, todo, config.workers), strict=True):
        if isinstance(sampled, MotionGuardError) or len(sampled) == 0:
            errors += 1
            message = sampled.message if isinstance(sampled, MotionGuardError) else "no frames"
            logger.info("robustness %s failed for %s: %s", transform.name, record.item.path, message)
        else:
            assert record.sha256 is not None
            embeddings = embedder.embed_frames(sampled.frames)
            cache.save(identity, record.sha256, embeddings, sampled.timestamps_seconds, transform.name)
        done += 1
        if progress is not None:
            progress(transform.label, done, len(records))
    return cache.gather(identity, records, transform.name), errors


# --- leave one generator out -------------------------------------------------------------


def leave_one_generator_out(
    bundle: ModelBundle, data: EmbeddedVideos, eval_records: Sequence[VideoRecord]
) -> dict[str, Any]:
    """Refit the bundle's SVM without each generator and test on that generator's held-out videos."""
    classifier = bundle.classifier
    if not isinstance(classifier, SvmHead):
        return {"skipped": "the head is not trained on videos (frame-to-prompt): every generator is unseen "
                "already; see the per-generator accuracy"}  # fmt: skip
    train_groups = bundle_groups(bundle.training)["train"]
    eval_paths = {r.item.path for r in eval_records}
    train_idx = [i for i, r in enumerate(data.videos) if r.item.group in train_groups]
    test_idx = [i for i, r in enumerate(data.videos) if r.item.path in eval_paths]
    if not train_idx:
        return {"skipped": "none of the bundle's training groups are in this dataset"}
    multiclass = any(c not in (REAL_LABEL, AI_LABEL) for c in classifier.classes_)
    generators = sorted({g for i in train_idx if (g := data.videos[i].item.generator) is not None})
    rows = []
    for generator in generators:
        keep_train = [i for i in train_idx if data.videos[i].item.generator != generator]
        keep_test = [i for i in test_idx if data.videos[i].item.class_name in (REAL_LABEL, generator)]
        train = data.subset(keep_train)
        test = data.subset(keep_test)
        labels = [r.item.class_name if multiclass else r.item.label for r in train.videos]
        unseen = [i for i, r in enumerate(test.videos) if r.item.generator == generator]
        if len(set(labels)) < 2 or not unseen:
            logger.info("leave-one-out: skipping %s (too few classes or no held-out video)", generator)
            continue
        y = np.asarray(labels, dtype=object)[train.video].astype(str)
        groups = train.frame_attr(lambda r: r.item.group).astype(str)
        head = SvmHead(**classifier.get_params()).fit(train.X, y, groups=groups)
        pred = predict(head, test)
        video_pred = pred.video_pred_ai()
        frame_pred = pred.frame_p_ai > 0.5
        frame_gen = np.asarray(test.frame_attr(lambda r: r.item.generator) == generator, dtype=bool)
        real = [i for i, r in enumerate(test.videos) if r.item.label == REAL_LABEL]
        metrics = evaluate_predictions(pred)
        rows.append(
            {
                "generator": generator,
                "videos": len(unseen),
                "video_detection_rate": round(float(np.mean(video_pred[unseen])), 4),
                "frame_detection_rate": round(float(np.mean(frame_pred[frame_gen])), 4),
                "real_video_accuracy": round(float(np.mean(~video_pred[real])), 4) if real else None,
                "video_accuracy": metrics["video"].get("accuracy"),
                "video_roc_auc": metrics["video"].get("roc_auc"),
            }
        )
    return {"rows": rows, "head_params": classifier.get_params()}


# --- the whole evaluation -------------------------------------------------------------------


def evaluate_bundle(
    bundle: ModelBundle,
    dataset: Dataset,
    cache: EmbedCache,
    embedder: Embedder,
    sampler: FrameSampler,
    identity: EmbeddingIdentity,
    config: EvaluateConfig,
    *,
    progress: ProgressFn | None = None,
    provenance: ProvenanceSource | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run every evaluation; return the JSON report and the arrays for the plots.

    ``provenance`` reads Content Credentials (default: no trust anchors)."""
    counter = {"done": 0}

    def on_video(_: VideoRecord) -> None:
        counter["done"] += 1
        if progress is not None:
            progress("embedding", counter["done"], len(dataset.items))

    run = embed_dataset(dataset, cache, embedder, sampler, identity, on_video=on_video, write_index=False)
    ok = [r for r in run.records if r.status == "ok"]
    eval_records, description = select_records(ok, bundle.training, config.split)
    everything = cache.gather(identity, ok)
    eval_paths = {r.item.path for r in eval_records}
    eval_data = everything.subset([i for i, r in enumerate(everything.videos) if r.item.path in eval_paths])
    if not eval_data.videos:
        raise ValueError("no video of the evaluated split could be embedded")
    pred = predict(bundle.classifier, eval_data)
    clean = evaluate_predictions(pred)
    embedder_name = str(identity.spec.get("model") or identity.embedder.get("architecture"))
    if identity.embedder.get("weights_sha256"):
        embedder_name += f" (fine-tuned {str(identity.embedder['weights_sha256'])[:12]})"
    report: dict[str, Any] = {
        "model": {
            "name": bundle.model_version,
            "classifier": bundle.classifier_kind,
            "classes": [str(c) for c in bundle.classifier.classes_],
            "embedder": embedder_name,
            "identity": identity.to_dict(),
            "untrained_embedder": identity.untrained,
        },
        "dataset": {
            "name": dataset.name,
            "kind": dataset.kind,
            "source": dataset.source,
            "videos": len(dataset),
        },
        "evaluated_split": description,
        "embedding_errors": [
            {"path": r.item.path, "code": r.error_code, "message": r.error_message} for r in run.errors
        ],
        "conventions": {
            "positive_class": AI_LABEL,
            "frame_decision": "P(AI) = 1 - P(real) > 0.5",
            "video_decision": "majority of frames (ties: mean P(AI) > 0.5)",
            "video_score_for_roc": "mean frame P(AI)",
        },
        "clean": clean,
        "provenance": provenance_split(
            pred, provenance if provenance is not None else ProvenanceReader(), bundle.policies["default"]
        ),
    }
    if config.transforms:
        rows = [{"condition": "original", "errors": 0, **headline(clean)}]
        for transform in config.transforms:
            variant, errors = embed_variant(
                eval_records, transform, cache, embedder, sampler, identity, config, progress
            )
            metrics = evaluate_predictions(predict(bundle.classifier, variant)) if variant.videos else {}
            rows.append({"condition": transform.label, "errors": errors, **headline(metrics)})
        report["robustness"] = {
            "conditions": [t.name for t in config.transforms],
            "rows": rows,
            "note": "scale-* re-encodes at CRF 18 after down-scaling; the sampler resizes frames back "
            "to the model's input size",
        }
    if config.leave_one_out:
        if progress is not None:
            progress("leave one generator out", 0, 1)
        report["leave_one_generator_out"] = leave_one_generator_out(bundle, everything, eval_records)
        if progress is not None:
            progress("leave one generator out", 1, 1)
    class_of = eval_data.frame_attr(lambda r: r.item.class_name)
    plots = {
        "pca_X": eval_data.X,
        "pca_classes": [str(c) for c in class_of],
        "pca_title": f"Frame embeddings ({embedder_name}), first two principal components",
    }
    return report, plots


def cache_path_for(report_dir: str | os.PathLike[str]) -> Path:
    """Default cache when ``evaluate`` gets a dataset and no ``--cache``."""
    return Path(report_dir) / "embed-cache"


# --- provenance, apart from the content detector ------------------------------------------


def provenance_split(pred: Predictions, reader: ProvenanceSource, policy: Policy) -> dict[str, Any]:
    """Videos decided by provenance and by content, each with its own accuracy.

    The content verdict is the report's video decision (``ai_generated`` or
    ``real``); :func:`detectors.voting.conclude` then says which evidence
    decides.  ``needs_review`` counts as not flagged, as in the worker's metrics.
    """
    states: Counter[str] = Counter()
    groups: dict[str, list[tuple[bool, bool]]] = {"content": [], "provenance": []}
    for video, is_ai, flagged in zip(pred.data.videos, pred.video_is_ai, pred.video_pred_ai(), strict=True):
        found = reader.read(video.item.path)
        states[found.state] += 1
        decision = conclude("ai_generated" if flagged else "real", found, policy)
        groups[decision.decided_by].append((bool(is_ai), decision.verdict == "ai_generated"))

    def summary(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
        correct = sum(truth == flagged for truth, flagged in pairs)
        return {
            "videos": len(pairs),
            "flagged": sum(flagged for _, flagged in pairs),
            "accuracy": round(correct / len(pairs), 4) if pairs else None,
        }

    return {
        "states": {state: states[state] for state in PROVENANCE_STATES},
        "decided_by_content": summary(groups["content"]),
        "decided_by_provenance": summary(groups["provenance"]),
        "note": "clean, robustness and leave-one-generator-out measure the content detector alone",
    }
