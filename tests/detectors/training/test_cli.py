"""The training commands' registration, errors and exit codes (no model or video work)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from detectors.training.cli import EXIT_USAGE, register
from tests.detectors.training.conftest import write_constructed_cache


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    training_app = typer.Typer()
    register(training_app)
    return training_app


def test_register_adds_the_commands_and_the_dataset_group(app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("embed", "train", "evaluate", "finetune", "dataset"):
        assert command in result.output
    assert "download" in CliRunner().invoke(app, ["dataset", "--help"]).output


def test_registering_imports_no_heavy_module() -> None:
    import subprocess
    import sys

    code = (
        "import sys, typer\n"
        "from detectors.training.cli import register\n"
        "register(typer.Typer())\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'sklearn', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "{tmp}/missing.csv", "--out", "{tmp}/c"], "does not exist"),
        (["train", "{tmp}", "--out", "{tmp}/b"], "not an embedding cache"),
        (
            ["train", "{cache}", "--out", "{tmp}/b", "--classifier", "svm-sigmoid"],
            "classifier must be one of",
        ),
        (["evaluate", "{tmp}/nothing", "{tmp}", "--report", "{tmp}/r"], "does not exist"),
        (["finetune", "{tmp}/missing.csv", "--out", "{tmp}/w.safetensors"], "does not exist"),
        (
            ["train", "{cache}", "--out", "{tmp}/b", "--val-fraction", "0.5", "--test-fraction", "0.5"],
            "must leave",
        ),
    ],
)
def test_usage_errors_exit_3_with_a_message(app: typer.Typer, tmp_path: Path, args: list[str], message: str) -> None:
    cache = write_constructed_cache(tmp_path / "cache", {"real": 4, "genA": 4})
    filled = [a.format(tmp=tmp_path, cache=cache.root) for a in args]
    result = CliRunner().invoke(app, filled)
    assert result.exit_code == EXIT_USAGE, result.output
    assert message in " ".join(result.output.split())


def test_dataset_download_fails_clearly_offline(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never download for real
    result = CliRunner().invoke(app, ["dataset", "download", "deepaction", "--out", str(tmp_path / "da")])
    assert result.exit_code == EXIT_USAGE
    text = " ".join(result.output.split())
    assert "error: could not find the dataset faridlab/deepaction_v1 in the local cache" in text
    assert "HF_HUB_OFFLINE is set" in text and "HF_ENDPOINT" in text  # why, and what to do
    assert "CC BY 4.0" in text  # the licence is shown before trying
