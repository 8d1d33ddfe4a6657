"""The ``motionguard`` command is assembled in one place, from modules without import cycles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer
from typer.main import get_command

from streamer.cli import create_app

CORE = {"scan", "embed", "train", "evaluate", "finetune", "dataset"}
EXPECTED = CORE | {"worker", "submit", "verdicts", "label", "kafka", "review"}


def command_names(app: typer.Typer) -> set[str]:
    return set(get_command(app).commands)  # type: ignore[attr-defined]  # a click Group


def test_every_command_is_there_each_time_the_app_is_made() -> None:
    first, second = create_app(), create_app()
    assert first is not second
    assert command_names(first) == command_names(second) == EXPECTED


def test_the_command_modules_import_alone_without_cycles_or_torch() -> None:
    """The training commands never import ``detectors.cli``; no command module imports torch up front."""
    for module in ("detectors.training.cli", "detectors.cli", "streamer.cli"):
        probe = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
        loaded = set(json.loads(result.stdout))
        assert "torch" not in loaded, module
        if module == "detectors.training.cli":
            assert "detectors.cli" not in loaded


def test_the_model_threads_wait_passively_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    # The entry point runs this before torch loads, so its idle threads leave the cores to ffmpeg.
    from detectors.cli_options import share_cores_with_decoders

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    share_cores_with_decoders()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    share_cores_with_decoders()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # an explicit choice wins
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setitem(sys.modules, "torch", object())
    share_cores_with_decoders()
    assert "OMP_WAIT_POLICY" not in os.environ  # too late once torch is loaded: nothing changes
