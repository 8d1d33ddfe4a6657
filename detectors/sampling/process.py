"""Running ffmpeg and ffprobe: a timeout per call, the process group killed as a whole,
and ffmpeg's log lines cleaned for error messages (the file's URL removed)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from detectors.errors import (
    DecodeTimeoutError,
    FfmpegNotFoundError,
)
from detectors.sampling.config import SamplingConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Completed:
    returncode: int
    stdout: bytes
    stderr: str


def _run(argv: Sequence[str], *, timeout_seconds: float, tool: str) -> _Completed:
    """Run ``argv`` in its own process group; kill the whole group on timeout."""
    logger.debug("running %s", " ".join(argv))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise FfmpegNotFoundError(
            f"the {tool} program was not found ({argv[0]!r}); install ffmpeg or set SamplingConfig.{tool}_binary"
        ) from e
    except OSError as e:
        raise FfmpegNotFoundError(f"the {tool} program {argv[0]!r} cannot be run: {e.strerror}") from e
    try:
        stdout, stderr = proc.communicate(timeout=timeout_seconds)
    except subprocess.TimeoutExpired as e:
        _kill_process_group(proc)
        raise DecodeTimeoutError(
            f"{tool} did not finish within {timeout_seconds:g} s and was stopped "
            "(the file may be malformed or too expensive to decode)"
        ) from e
    except BaseException:
        _kill_process_group(proc)
        raise
    logger.debug("%s exited with %d after %.3f s", tool, proc.returncode, time.monotonic() - started)
    return _Completed(proc.returncode, stdout, stderr.decode("utf-8", errors="replace"))


def _kill_process_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _file_url(path: str) -> str:
    # The explicit protocol stops ffmpeg from reading "http:..." or "concat:..."
    # in a file name as a protocol.
    return "file:" + os.path.abspath(path)


def _input_options(config: SamplingConfig) -> dict[str, str]:
    options = {"protocol_whitelist": "file"}
    if config.allowed_formats is not None:
        options["format_whitelist"] = ",".join(config.allowed_formats)
    return options


_LOG_PREFIX = re.compile(r"^(\[[^\]]*\]\s*)+")


def _clean_line(line: str, url: str) -> str:
    line = _LOG_PREFIX.sub("", line.strip())
    line = line.replace(f"{url}: ", "").replace(url, "<file>")
    return line[:200]


def _find_line(stderr: str, needle: str, url: str) -> str | None:
    for line in stderr.splitlines():
        if needle in line.lower():
            return _clean_line(line, url)
    return None


def _last_line(stderr: str, url: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return _clean_line(lines[-1], url) if lines else "no error message"


def _flatten(options: Mapping[str, str]) -> list[str]:
    return [part for key, value in options.items() for part in (f"-{key}", value)]
