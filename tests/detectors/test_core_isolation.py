"""The scoring core stays broker-free: no streamer, Faust, Kafka or Prometheus imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import detectors

FORBIDDEN = ("streamer", "faust", "mode", "kafka", "aiokafka", "prometheus_client")
CORE = Path(detectors.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_core_module_imports_a_streaming_library() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 5
    offenders = {str(path.relative_to(CORE)): sorted(_imported_roots(path) & set(FORBIDDEN)) for path in modules}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_core_module_loads_no_streaming_library() -> None:
    names = [
        "detectors." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in sorted(CORE.rglob("*.py"))
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
