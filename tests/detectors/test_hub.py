"""``detectors.hub``: hub failures become one line, without huggingface_hub's retry warnings.

Fast, in-process checks against a closed local port; the end-to-end runs of
every entry point are in ``test_hub_offline.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from huggingface_hub import constants
from huggingface_hub.utils import http_backoff

from detectors.errors import DatasetError
from detectors.hub import HUB_HINT, quiet_hub_retries
from detectors.training.download import KNOWN_DATASETS, download_dataset
from motionguard_dev.harness import free_port


@pytest.fixture
def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def hub_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("huggingface_hub") and r.levelno >= logging.WARNING]


def test_retry_warnings_are_held_back_and_the_first_failed_request_is_kept(
    closed_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # whatever the environment says
    caplog.set_level(logging.DEBUG)
    url = f"{closed_url}/some/repo/resolve/main/file.bin"
    with quiet_hub_retries() as noise, pytest.raises(Exception):  # noqa: B017 - any failure will do
        http_backoff("HEAD", url, max_retries=1, base_wait_time=0.01)
    assert hub_warnings(caplog) == []
    assert noise.first_failure is not None and noise.first_failure.startswith(f"HEAD {url}: ")
    held_back = [r.getMessage() for r in caplog.records if r.name == "detectors.hub"]
    assert any("thrown while requesting HEAD" in m for m in held_back)

    caplog.clear()  # outside the block, huggingface_hub's warnings pass again
    with pytest.raises(Exception):  # noqa: B017
        http_backoff("HEAD", url, max_retries=1, base_wait_time=0.01)
    assert hub_warnings(caplog)


def test_dataset_download_from_an_unreachable_hub_is_one_line(
    closed_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", closed_url)  # huggingface_hub reads HF_ENDPOINT on import only
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    repo_id = KNOWN_DATASETS["deepaction"].repo_id
    with pytest.raises(DatasetError) as info:
        download_dataset("deepaction", tmp_path / "out")
    message = info.value.message
    assert "\n" not in message
    assert message.startswith(f"could not download the dataset {repo_id} from the Hugging Face hub at {closed_url}: ")
    assert f"GET {closed_url}/api/datasets/{repo_id}" in message
    assert HUB_HINT in message
    assert hub_warnings(caplog) == []
