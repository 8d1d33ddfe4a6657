"""The ``motionguard`` command is assembled in one place, from modules without import cycles."""

from __future__ import annotations

import json
import subprocess
import sys

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
