"""Write an evaluation report: ``report.json``, ``report.md`` and PNG plots.

Plots are drawn with matplotlib's object API on the Agg canvas (no pyplot, no
global state, no display needed):

* ``confusion_matrix.png``: video-level real / AI confusion matrix (and the
  generator-attribution matrix for multi-class heads, ``attribution_matrix.png``);
* ``roc.png``: frame- and video-level ROC curves;
* ``pca.png``: the test frames' embeddings projected on their first two
  principal components, coloured by class (as in the paper's first figure);
* ``calibration.png``: reliability diagram of the frame probabilities;
* ``robustness.png``: accuracy under down-scaling and re-compression.

``report.md`` lays the numbers out as the paper's tables are laid out (overall
accuracy, per-generator accuracy, robustness, unseen generators), one row per
condition, so rows from several reports can be put side by side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detectors.types import REAL_LABEL

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str, path: Path) -> Path:
    data = np.asarray(matrix, dtype=float)
    size = max(4.0, 0.7 * len(labels) + 2.5)
    figure = Figure(figsize=(size, size * 0.85))
    ax = figure.add_subplot()
    image = ax.imshow(data, cmap="Blues")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = data.max() / 2 if data.size else 0
    for (i, j), value in np.ndenumerate(data):
        ax.text(j, i, f"{int(value)}", ha="center", va="center", color="white" if value > threshold else "black")
    return _save(figure, path)


def plot_roc(curves: Mapping[str, Mapping[str, Sequence[float]] | None], aucs: Mapping[str, Any], path: Path) -> Path:
    figure = Figure(figsize=(5, 5))
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    for name, curve in curves.items():
        if curve is None:
            continue
        auc = aucs.get(name)
        label = f"{name} level" + (f" (AUC {auc:.3f})" if isinstance(auc, float) else "")
        ax.plot(curve["fpr"], curve["tpr"], label=label)
    ax.set_xlabel("false positive rate (real called AI)")
    ax.set_ylabel("true positive rate (AI detected)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    return _save(figure, path)


def pca_2d(X: npt.NDArray[np.floating[Any]]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Project rows on their first two principal components; also return the explained variance ratio."""
    centred = np.asarray(X, dtype=np.float64) - np.mean(X, axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    points = centred @ vt[:k].T
    if k < 2:
        points = np.column_stack([points, np.zeros((len(points), 2 - k))])
    total = float(np.sum(s**2)) or 1.0
    ratio = np.zeros(2)
    ratio[:k] = (s[:k] ** 2) / total
    return points, ratio


def plot_pca(
    X: npt.NDArray[np.floating[Any]],
    classes: Sequence[str],
    path: Path,
    *,
    title: str,
    max_points: int = 5000,
) -> Path:
    names = np.asarray(classes, dtype=object)
    if len(X) > max_points:
        keep = np.random.default_rng(0).choice(len(X), size=max_points, replace=False)
        X, names = X[keep], names[keep]
    points, ratio = pca_2d(X)
    figure = Figure(figsize=(6, 5))
    ax = figure.add_subplot()
    order = sorted(set(names.tolist()), key=lambda n: (n != REAL_LABEL, n))
    colours = [
        "tab:green",
        "tab:red",
        "tab:blue",
        "tab:orange",
        "tab:purple",
        "tab:brown",
        "tab:pink",
        "tab:olive",
    ]
    for i, name in enumerate(order):
        mask = names == name
        colour = colours[i % len(colours)] if name != REAL_LABEL else "tab:green"
        ax.scatter(points[mask, 0], points[mask, 1], s=8, alpha=0.6, color=colour, label=f"{name} ({mask.sum()})")
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small", markerscale=2)
    return _save(figure, path)


def plot_reliability(calibration: Mapping[str, Any], path: Path) -> Path:
    figure = Figure(figsize=(5, 5))
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    bins = calibration.get("bins", [])
    if bins:
        x = [b["mean_predicted"] for b in bins]
        y = [b["observed"] for b in bins]
        ax.plot(x, y, marker="o", label=f"frames (ECE {calibration.get('ece', float('nan')):.3f})")
    ax.set_xlabel("predicted P(AI)")
    ax.set_ylabel("observed fraction AI")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability")
    ax.legend(loc="upper left")
    return _save(figure, path)


def plot_robustness(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    figure = Figure(figsize=(6, 4))
    ax = figure.add_subplot()
    names = [r["condition"] for r in rows]
    x = np.arange(len(names))
    width = 0.38
    frame = [r.get("frame_accuracy") or 0.0 for r in rows]
    video = [r.get("video_accuracy") or 0.0 for r in rows]
    ax.bar(x - width / 2, frame, width, label="frame")
    ax.bar(x + width / 2, video, width, label="video")
    ax.set_xticks(x, labels=names, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title("Robustness to down-scaling and re-compression")
    ax.legend(loc="lower left")
    return _save(figure, path)


# --- markdown ----------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    model = report["model"]
    clean = report["clean"]
    lines = [f"# MotionGuard evaluation: {model['name']}", ""]
    if model.get("untrained_embedder"):
        lines += [
            "> **Untrained embedder (random weights).** These numbers show that the pipeline runs;",
            "> they say nothing about detecting AI-generated video.",
            "",
        ]
    lines += [
        f"Dataset `{report['dataset']['name']}` ({report['dataset']['kind']}), "
        f"evaluated split: **{report['evaluated_split']}** "
        f"({clean['video'].get('n', 0)} videos, {clean['frame'].get('n', 0)} frames). "
        f"Embedder `{model['embedder']}`, classifier `{model['classifier']}`.",
        "",
        "## Accuracy (layout of the paper's main table)",
        "",
    ]
    lines += _table(
        ["embedding", "classifier", "frame acc", "video acc", "video precision", "video recall", "video F1",
         "video ROC-AUC", "frame ROC-AUC"],
        [[
            model["embedder"], model["classifier"],
            clean["frame"].get("accuracy"), clean["video"].get("accuracy"),
            clean["video"].get("precision"), clean["video"].get("recall"), clean["video"].get("f1"),
            clean["video"].get("roc_auc"), clean["frame"].get("roc_auc"),
        ]],
    )  # fmt: skip
    cal = clean.get("calibration", {})
    lines += [
        "",
        f"Calibration (frame P(AI)): ECE {_fmt(cal.get('ece'))}, Brier {_fmt(cal.get('brier'))}.",
        "",
    ]
    lines += [
        "## Per-generator accuracy",
        "",
        "Real: share called real. Generators: share detected as AI.",
        "",
    ]
    lines += _table(
        ["class", "videos", "frame acc", "video acc"],
        [[name, row["videos"], row["frame_accuracy"], row["video_accuracy"]]
         for name, row in clean["per_generator"].items()],
    )  # fmt: skip
    attribution = clean.get("attribution")
    if attribution:
        lines += [
            "",
            "## Generator attribution (multi-class head)",
            "",
            f"Video-level attribution accuracy {_fmt(attribution.get('video_accuracy'))}; "
            f"on AI videos only {_fmt(attribution.get('generator_accuracy_on_ai_videos'))}.",
        ]
    robustness = report.get("robustness")
    if robustness:
        lines += ["", "## Robustness (inputs re-scaled / re-encoded with ffmpeg)", ""]
        lines += _table(
            ["condition", "videos", "errors", "frame acc", "video acc", "video ROC-AUC"],
            [[r["condition"], r["videos"], r.get("errors", 0), r["frame_accuracy"], r["video_accuracy"],
              r["video_roc_auc"]] for r in robustness["rows"]],
        )  # fmt: skip
    logo = report.get("leave_one_generator_out")
    if logo and logo.get("rows"):
        lines += ["", "## Unseen generators (leave one generator out)", ""]
        lines += _table(
            ["held-out generator", "videos", "detected (video)", "detected (frame)", "real acc (video)",
             "overall video acc"],
            [[r["generator"], r["videos"], r["video_detection_rate"], r["frame_detection_rate"],
              r["real_video_accuracy"], r["video_accuracy"]] for r in logo["rows"]],
        )  # fmt: skip
    elif logo and logo.get("skipped"):
        lines += ["", "## Unseen generators", "", f"Skipped: {logo['skipped']}"]
    lines += ["", "## Plots", ""]
    lines += [f"- `{name}`" for name in report.get("plots", [])]
    return "\n".join(lines) + "\n"


def write_report(directory: str | Path, report: dict[str, Any], plots: Mapping[str, Any]) -> Path:
    """Draw the plots described by ``plots`` and write ``report.json`` + ``report.md``.

    ``plots`` holds arrays that do not belong in the JSON (the PCA points).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    clean = report["clean"]
    written: list[str] = []
    video = clean["video"]
    if video.get("n"):
        plot_confusion(
            video["confusion"]["matrix"], video["confusion"]["labels"], "Video-level confusion matrix",
            out / "confusion_matrix.png",
        )  # fmt: skip
        written.append("confusion_matrix.png")
    attribution = clean.get("attribution")
    if attribution and attribution.get("confusion"):
        plot_confusion(
            attribution["confusion"], attribution["labels"], "Generator attribution (videos)",
            out / "attribution_matrix.png",
        )  # fmt: skip
        written.append("attribution_matrix.png")
    if any(clean["roc"].values()):
        aucs = {"frame": clean["frame"].get("roc_auc"), "video": clean["video"].get("roc_auc")}
        plot_roc(clean["roc"], aucs, out / "roc.png")
        written.append("roc.png")
    if plots.get("pca_X") is not None and len(plots["pca_X"]) >= 2:
        plot_pca(plots["pca_X"], plots["pca_classes"], out / "pca.png", title=plots.get("pca_title", "PCA"))
        written.append("pca.png")
    if clean.get("calibration", {}).get("bins"):
        plot_reliability(clean["calibration"], out / "calibration.png")
        written.append("calibration.png")
    robustness = report.get("robustness")
    if robustness and robustness.get("rows"):
        plot_robustness(robustness["rows"], out / "robustness.png")
        written.append("robustness.png")
    report["plots"] = written
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / REPORT_MD).write_text(markdown(report), encoding="utf-8")
    logger.info("wrote report to %s (%s)", out, ", ".join(written))
    return out
