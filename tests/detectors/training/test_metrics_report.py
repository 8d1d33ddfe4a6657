"""Metrics with known answers, the written report, robustness re-encoding and the download command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detectors.errors import DatasetError
from detectors.training.cache import EmbeddedVideos, VideoRecord
from detectors.training.datasets import VideoItem
from detectors.training.metrics import Predictions, calibration_metrics, evaluate_predictions
from detectors.training.report import REPORT_JSON, REPORT_MD, pca_2d, write_report
from detectors.types import AI_LABEL, REAL_LABEL


def predictions(
    per_video: list[tuple[str, list[float]]], classes: tuple[str, ...] = (AI_LABEL, REAL_LABEL)
) -> Predictions:
    """``per_video``: (class name, frame P(AI) values); two-class probabilities."""
    records, owner, p_ai = [], [], []
    for v, (name, values) in enumerate(per_video):
        item = VideoItem(f"/v/{v}.mp4", REAL_LABEL if name == REAL_LABEL else AI_LABEL,
                         None if name == REAL_LABEL else name, f"g{v}")  # fmt: skip
        records.append(VideoRecord(item=item, status="ok", sha256=f"{v:064d}", frames=len(values)))
        owner += [v] * len(values)
        p_ai += values
    p = np.array(p_ai)
    data = EmbeddedVideos(
        X=np.random.default_rng(0).standard_normal((len(p), 4)).astype(np.float32),
        video=np.array(owner, dtype=np.intp),
        timestamps=np.zeros(len(p)),
        videos=tuple(records),
    )
    return Predictions(data=data, classes=classes, proba=np.column_stack([p, 1 - p]))


def test_video_verdict_is_the_majority_of_frames() -> None:
    pred = predictions(
        [
            ("genA", [0.9, 0.8, 0.1]),  # 2 of 3 frames AI -> AI
            ("genA", [0.9, 0.2]),  # tie, mean 0.55 -> AI
            (REAL_LABEL, [0.6, 0.1]),  # tie, mean 0.35 -> real
            (REAL_LABEL, [0.7, 0.7, 0.2]),  # majority AI -> a false positive
        ]
    )
    assert pred.video_pred_ai().tolist() == [True, True, False, True]
    metrics = evaluate_predictions(pred)
    assert metrics["video"]["accuracy"] == 0.75
    assert metrics["video"]["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["video"]["recall"] == 1.0
    assert metrics["video"]["confusion"] == {"labels": [REAL_LABEL, AI_LABEL], "matrix": [[1, 1], [0, 2]]}
    assert metrics["frame"]["n"] == 10
    assert metrics["frame"]["accuracy"] == 0.5  # 3 of 5 AI frames and 2 of 5 real frames
    assert metrics["per_generator"] == {
        REAL_LABEL: {"videos": 2, "frames": 5, "frame_accuracy": 0.4, "video_accuracy": 0.5},
        "genA": {"videos": 2, "frames": 5, "frame_accuracy": 0.6, "video_accuracy": 1.0},
    }
    assert metrics["attribution"] is None  # a two-class head attributes nothing


def test_expected_calibration_error_tells_calibrated_from_overconfident() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20_000)
    truth = rng.uniform(size=p.size) < p
    assert calibration_metrics(truth, p)["ece"] < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)
    coin = rng.uniform(size=p.size) < 0.5
    result = calibration_metrics(coin, overconfident)
    assert result["ece"] == pytest.approx(0.49, abs=0.02)
    assert sum(b["count"] for b in result["bins"]) == p.size


def test_multiclass_attribution_confusion() -> None:
    classes = ("genA", "genB", REAL_LABEL)
    base = predictions([("genA", [0.9]), ("genB", [0.9]), (REAL_LABEL, [0.1])], classes=classes)
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.05, 0.05, 0.9]])
    pred = Predictions(data=base.data, classes=classes, proba=proba)
    attribution = evaluate_predictions(pred)["attribution"]
    assert attribution["labels"] == [REAL_LABEL, "genA", "genB"]
    assert attribution["video_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert attribution["generator_accuracy_on_ai_videos"] == 0.5
    assert attribution["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_pca_finds_the_direction_of_largest_variance() -> None:
    rng = np.random.default_rng(1)
    X = np.column_stack([10 * rng.standard_normal(200), rng.standard_normal(200), np.zeros(200)])
    points, ratio = pca_2d(X)
    assert points.shape == (200, 2)
    assert ratio[0] > 0.95
    assert abs(np.corrcoef(points[:, 0], X[:, 0])[0, 1]) > 0.99


def test_report_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    pred = predictions([("genA", [0.9, 0.7]), ("genB", [0.6, 0.8]), (REAL_LABEL, [0.1, 0.3]), (REAL_LABEL, [0.2, 0.6])])
    clean = evaluate_predictions(pred)
    report = {
        "model": {
            "name": "m@1",
            "classifier": "svm-rbf",
            "embedder": "tiny-test",
            "untrained_embedder": True,
        },
        "dataset": {"name": "toy", "kind": "manifest"},
        "evaluated_split": "test",
        "clean": clean,
        "robustness": {
            "rows": [
                {
                    "condition": "original",
                    "videos": 4,
                    "frame_accuracy": 0.9,
                    "video_accuracy": 1.0,
                    "video_roc_auc": 1.0,
                }
            ]
        },
        "leave_one_generator_out": {
            "rows": [
                {
                    "generator": "genA",
                    "videos": 1,
                    "video_detection_rate": 1.0,
                    "frame_detection_rate": 1.0,
                    "real_video_accuracy": 1.0,
                    "video_accuracy": 1.0,
                }
            ]
        },
    }
    plots = {
        "pca_X": pred.data.X,
        "pca_classes": [r.item.class_name for r in pred.data.videos for _ in range(2)],
    }
    out = write_report(tmp_path / "report", report, plots)
    for name in ("confusion_matrix.png", "roc.png", "pca.png", "calibration.png", "robustness.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    stored = json.loads((out / REPORT_JSON).read_text())
    assert stored["clean"]["video"]["accuracy"] == clean["video"]["accuracy"]
    text = (out / REPORT_MD).read_text()
    assert "Untrained embedder" in text
    assert "| tiny-test | svm-rbf |" in text
    assert "## Unseen generators" in text and "## Robustness" in text


def test_robustness_transcode_scales_and_reencodes(tmp_path: Path, videos) -> None:  # type: ignore[no-untyped-def]
    from detectors.errors import CorruptVideoError
    from detectors.sampling import probe_video
    from detectors.training.evaluate import Transform, transcode

    source = videos.video(seconds=1, width=64, height=48, source="testsrc2")
    half = tmp_path / "half.mp4"
    transcode(str(source), str(half), Transform("scale", 0.5), timeout_seconds=60)
    probe = probe_video(half)
    assert (probe.width, probe.height) == (32, 24)
    crf = tmp_path / "crf.mp4"
    transcode(str(source), str(crf), Transform("crf", 36), timeout_seconds=60)
    assert (probe_video(crf).width, probe_video(crf).height) == (64, 48)
    assert Transform("crf", 36).name == "h264-crf36" and Transform("scale", 0.25).name == "scale-0.25"
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"nope")
    with pytest.raises(CorruptVideoError, match="re-encoding"):
        transcode(str(bogus), str(tmp_path / "out.mp4"), Transform("crf", 28), timeout_seconds=60)


def test_download_fails_clearly_without_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline (forced, so the test never downloads 5.6 GB where the hub is reachable)."""
    import huggingface_hub.constants

    from detectors.training.download import download_dataset

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetError, match="could not find the dataset faridlab/deepaction_v1") as info:
        download_dataset("deepaction", tmp_path / "da")
    assert "HF_HUB_OFFLINE is set" in info.value.message
    assert "HF_ENDPOINT" in info.value.message and "<Source>/<action>/<clip>.mp4" in info.value.message
    with pytest.raises(DatasetError, match="unknown dataset"):
        download_dataset("imagenet", tmp_path / "x")
