"""End to end through the CLI: embed -> train -> evaluate -> scan --bundle, on synthetic videos.

NOT the paper's claim.  The videos are two visually different kinds of ffmpeg
test patterns (see ``SYNTHETIC_SOURCES``) and the embedder is a tiny
random-initialised ViT.  A high accuracy here proves only that the pipeline
learns what separates its inputs and carries it through every stage; it says
nothing about detecting AI-generated human motion.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from detectors.training.cli import register
from tests.detectors.training.conftest import make_synthetic_manifest

COUNTS = {"real": 16, "fractal": 8, "automaton": 8}
MODEL = ["--model", "tiny-test", "--pretrained", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    training_app = typer.Typer()
    register(training_app)
    return training_app


@pytest.fixture(scope="module")
def embedded(app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The synthetic manifest, embedded once with the tiny random model: (manifest, cache, output)."""
    root = tmp_path_factory.mktemp("e2e")
    manifest = make_synthetic_manifest(root / "data", COUNTS)
    cache = root / "cache"
    result = invoke(app, ["embed", manifest, "--out", cache, *MODEL, "--frames", "6"])
    return manifest, cache, result.output


def invoke(app: typer.Typer, args: list[str | Path], expect: int = 0) -> Result:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == expect, f"{args[0]} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
    return result


def scan_json(bundle: Path, videos: list[str]) -> list[dict[str, Any]]:
    from detectors.cli import create_app

    result = CliRunner().invoke(create_app(), ["scan", *videos, "--bundle", str(bundle), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_embed_train_evaluate_scan(app: typer.Typer, embedded: tuple[Path, Path, str], tmp_path: Path) -> None:
    manifest, cache, output = embedded
    bundle, report = tmp_path / "bundle", tmp_path / "report"
    assert "untrained model" in output
    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and index["counts"] == {"ok": 32, "error": 0, "pending": 0}
    again = invoke(app, ["embed", manifest, "--out", cache, *MODEL, "--frames", "6"])
    assert "0 embedded, 32 reused" in " ".join(again.output.split())

    invoke(
        app,
        [
            "train",
            cache,
            "--classifier",
            "svm-rbf",
            "--out",
            bundle,
            "--test-fraction",
            "0.35",
            "--seed",
            "1",
        ],
    )
    training = json.loads((bundle / "bundle.json").read_text())["training"]
    assert training["data"]["test"]["videos"] == 12
    assert training["split"]["seed"] == 1

    invoke(app, ["evaluate", bundle, manifest, "--report", report, "--cache", cache, "--device", "cpu",
                 "--scales", "0.5", "--crf", "36"])  # fmt: skip
    result = json.loads((report / "report.json").read_text())
    assert result["evaluated_split"] == "test"
    video = result["clean"]["video"]
    assert video["n"] == 12
    assert video["accuracy"] > 0.9, result["clean"]
    assert result["provenance"]["states"]["none"] == 12  # unsigned clips: the content decides them all
    assert result["provenance"]["decided_by_content"]["videos"] == 12
    assert result["provenance"]["decided_by_provenance"] == {"videos": 0, "flagged": 0, "accuracy": None}
    for plot in ("confusion_matrix.png", "roc.png", "pca.png", "calibration.png", "robustness.png"):
        assert (report / plot).read_bytes()[:4] == b"\x89PNG", plot
    assert [row["condition"] for row in result["robustness"]["rows"]] == [
        "original", "down-scaled x0.5", "H.264 CRF 36",
    ]  # fmt: skip
    assert all(row["videos"] == 12 for row in result["robustness"]["rows"])
    assert [row["generator"] for row in result["leave_one_generator_out"]["rows"]] == ["automaton", "fractal"]
    assert "Untrained embedder" in (report / "report.md").read_text()

    # New files, never seen by embed/train/evaluate, scored by `scan --bundle` with the trained head.
    fresh = make_synthetic_manifest(tmp_path / "fresh", {"real": 1, "fractal": 1, "automaton": 1}, offset=100)
    paths = [line.split(",")[0] for line in fresh.read_text().splitlines()[1:]]
    rows = scan_json(bundle, [str(fresh.parent / p) for p in paths])
    assert [row["verdict"] for row in rows] == ["real", "ai_generated", "ai_generated"], rows
    assert all(row["model"]["classifier"] == "svm-rbf" and row["generator"] is None for row in rows)


@pytest.mark.slow
def test_multiclass_head_names_the_generator_end_to_end(
    app: typer.Typer, embedded: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, cache, _ = embedded
    bundle, report = tmp_path / "bundle", tmp_path / "report"
    invoke(app, ["train", cache, "--classifier", "svm-multiclass", "--out", bundle, "--test-fraction", "0.35"])
    invoke(app, ["evaluate", bundle, cache, "--report", report, "--device", "cpu", "--no-robustness",
                 "--no-leave-one-out"])  # fmt: skip
    result = json.loads((report / "report.json").read_text())
    assert result["model"]["classes"] == ["automaton", "fractal", "real"]
    assert result["clean"]["attribution"]["video_accuracy"] > 0.9
    assert (report / "attribution_matrix.png").is_file()

    fresh = make_synthetic_manifest(tmp_path / "fresh", {"fractal": 1, "automaton": 1}, offset=200)
    paths = [str(fresh.parent / line.split(",")[0]) for line in fresh.read_text().splitlines()[1:]]
    rows = scan_json(bundle, paths)
    assert [row["verdict"] for row in rows] == ["ai_generated", "ai_generated"]
    assert [row["generator"][0]["name"] for row in rows] == ["fractal", "automaton"], rows
