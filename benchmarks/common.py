"""Shared helpers: the machine's description, timed subprocesses, results on disk."""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.corpus import DEFAULT_CACHE, REPO

PYTHON = sys.executable
#: The lean static ffmpeg and ffprobe that `scripts/build-ffmpeg.sh` builds (make bench builds them first).
LEAN_FFMPEG_DIR = REPO / ".cache" / "ffmpeg-lean" / "bin"
#: The same with NVDEC (`scripts/build-ffmpeg.sh --nvdec .cache/ffmpeg-lean-nvdec`), for GPU hosts.
LEAN_NVDEC_FFMPEG_DIR = REPO / ".cache" / "ffmpeg-lean-nvdec" / "bin"


def lean_ffmpeg() -> tuple[str, str] | None:
    """The lean build's ffmpeg and ffprobe, where it has been built."""
    ffmpeg, ffprobe = LEAN_FFMPEG_DIR / "ffmpeg", LEAN_FFMPEG_DIR / "ffprobe"
    if os.access(ffmpeg, os.X_OK) and os.access(ffprobe, os.X_OK):
        return str(ffmpeg), str(ffprobe)
    return None


def results_dir(cache_dir: Path = DEFAULT_CACHE) -> Path:
    path = cache_dir / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "ffmpeg": _first_line(["ffmpeg", "-version"]),
        "ffmpeg_lean": _first_line([lean[0], "-version"]) if (lean := lean_ffmpeg()) else None,
        "gpu": "none",
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import open_clip

        info["open_clip"] = open_clip.__version__
    except ImportError:
        pass
    return info


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Timed:
    """One timed subprocess: wall time, CPU time of it and everything it waited for."""

    argv: list[str]
    wall_seconds: float
    cpu_seconds: float
    returncode: int
    stdout: str
    stderr: str

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def run_timed(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_seconds: float = 1800,
    check: bool = True,
) -> Timed:
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONPATH", str(REPO))
    if env:
        full_env.update(env)
    cpu_before = children_cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(
        list(argv), cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout_seconds, check=False
    )
    wall = time.perf_counter() - started
    timed = Timed(list(argv), wall, children_cpu_seconds() - cpu_before, done.returncode, done.stdout, done.stderr)
    if check and done.returncode not in (0,):
        raise RuntimeError(f"{timed.command} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return timed


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> tuple[float, float]:
    return (min(values), max(values)) if values else (float("nan"), float("nan"))


def save(name: str, payload: Mapping[str, Any], cache_dir: Path = DEFAULT_CACHE) -> Path:
    path = results_dir(cache_dir) / f"{name}.json"
    data = {"benchmark": name, "finished_at": now_utc(), "load_average_end": load_average(), **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)
    print(f"[bench] wrote {path}", file=sys.stderr, flush=True)
    return path


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def relpath(path: Path | str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)
