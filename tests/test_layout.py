"""Development tools stay off the runtime import path.

The local broker launcher and the worker harness live in ``motionguard_dev``; the
runtime (``detectors``, ``streamer``) never imports it, so the worker runs where it
is not installed (the image), and benchmarks never import from ``tests``.  The one
deliberate route from the runtime to ``motionguard_dev`` is the ``kafka`` group
(:mod:`streamer.kafka_commands`), which imports it by name when ``kafka
start|stop|status`` is run; the tests below show it stays closed otherwise.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.kafka_commands import DEV_COMMANDS, DEV_PACKAGE

REPO = Path(__file__).resolve().parents[1]

# Every runtime module of the streaming side (the worker, its uploads consumer and scoring,
# the review console, the CLI), the modules the ``worker`` command imports when it runs, then
# the command line assembled and ``motionguard kafka acls`` run: what remains loaded is printed.
RUNTIME_PROBE = """
import contextlib, importlib, io, json, pkgutil, sys
import streamer
for info in pkgutil.walk_packages(streamer.__path__, "streamer."):
    if info.name != "streamer.__main__":  # runs the command line on import
        importlib.import_module(info.name)
for name in ("detectors.errors", "detectors.loading", "detectors.provenance", "detectors.sampling", "detectors.cli"):
    importlib.import_module(name)
from streamer.cli import main
sys.argv = ["motionguard", "kafka", "acls"]
with contextlib.redirect_stdout(io.StringIO()) as table, contextlib.suppress(SystemExit):
    main()
assert "User:worker" in table.getvalue(), table.getvalue()
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(code: str, *args: str) -> set[str]:
    """The names in ``sys.modules`` after ``code`` ran in a fresh interpreter (it prints them as JSON)."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def development_modules(modules: set[str]) -> set[str]:
    return {name for name in modules if name == DEV_PACKAGE or name.startswith(f"{DEV_PACKAGE}.")}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (absolute names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            names.add(node.module)
    return names


def imports_of(package_dir: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    """``{file: the forbidden packages it imports}`` for every Python file under ``package_dir``."""
    files = sorted((REPO / package_dir).rglob("*.py"))
    assert files, f"no Python files under {package_dir}"
    found: dict[str, set[str]] = {}
    for path in files:
        bad = {name for name in imported_modules(path) if any(name == f or name.startswith(f"{f}.") for f in forbidden)}
        if bad:
            found[str(path.relative_to(REPO))] = bad
    return found


@pytest.mark.slow
def test_the_worker_the_review_console_and_kafka_acls_never_load_the_development_package() -> None:
    loaded = loaded_modules(RUNTIME_PROBE)
    assert {"streamer.worker", "streamer.uploads", "streamer.scoring", "streamer.review.app"} <= loaded
    assert development_modules(loaded) == set()


@pytest.mark.slow
def test_the_kafka_group_loads_the_broker_launcher_only_to_run_it(tmp_path: Path) -> None:
    """``kafka status`` is the group's route to ``motionguard_dev``: the probe sees it, so it would see a leak."""
    code = (
        "import contextlib, json, sys\n"
        "from streamer.cli import main\n"
        "sys.argv = ['motionguard', 'kafka', 'status', '--data-dir', sys.argv[1]]\n"
        "with contextlib.suppress(SystemExit):\n"
        "    main()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = loaded_modules(code, str(tmp_path / "no-broker"))
    assert {"motionguard_dev.kafka_cli", "motionguard_dev.kafka_local"} <= development_modules(loaded)


def test_without_the_development_package_kafka_start_says_so_and_acls_still_works() -> None:
    """As in the worker image, which ships ``detectors`` and ``streamer`` only."""
    code = (
        "import sys\n"
        f"sys.modules[{DEV_PACKAGE!r}] = None  # what an installation without the package sees\n"
        "from streamer.cli import main\n"
        "sys.argv = ['motionguard', 'kafka', *sys.argv[1:]]\n"
        "main()\n"
    )

    def kafka(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", code, *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)

    for name in DEV_COMMANDS:
        result = kafka(name, "--port", "9092")
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert f"motionguard kafka {name} needs the development package {DEV_PACKAGE}" in result.stderr
    acls = kafka("acls", "--app-id", "mg")
    assert acls.returncode == 0, acls.stderr
    assert "`mg-uploads`" in acls.stdout


def test_the_runtime_packages_never_import_the_development_package_or_the_tests() -> None:
    for package in ("detectors", "streamer"):
        assert imports_of(package, (DEV_PACKAGE, "tests")) == {}, package


def test_the_development_package_and_the_benchmarks_never_import_the_tests() -> None:
    assert imports_of(DEV_PACKAGE, ("tests",)) == {}
    assert imports_of("benchmarks", ("tests",)) == {}


def test_the_import_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text(
        "import os\n\ndef start():\n    from motionguard_dev.kafka_local import LocalKafka\n"
        "    import tests.videofactory\n    from . import sibling\n",
        encoding="utf-8",
    )
    assert imported_modules(module) == {"os", "motionguard_dev.kafka_local", "tests.videofactory"}
