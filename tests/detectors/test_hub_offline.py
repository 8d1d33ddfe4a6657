"""The real-weights and dataset paths, end to end, against a local hub (no internet).

``tests/hubmirror.py`` answers like the Hugging Face hub; the commands under test
reach it only through huggingface_hub's own ``HF_ENDPOINT`` setting, in
subprocesses with a fresh ``HF_HOME``.  It serves:

* the open_clip checkpoint that ``--pretrained openai`` of ``ViT-B-32`` (the
  ``clip-vit-b-32`` preset) asks for: the repo and file name come from
  open_clip's own pretrained table, the weights are a random initialisation
  made here (once per module, in a temp dir) in the same safetensors format;
* a tiny DeepAction-shaped dataset (``<Source>/<action>/<clip>.mp4``) under the
  repo id ``motionguard dataset download deepaction`` asks for.

The last tests point ``HF_ENDPOINT`` at a closed port and check that each entry
point fails with one ``error:`` line that says what was tried and what to do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import open_clip
import pytest
import torch
from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME
from safetensors.torch import save_file

from detectors.embedding import UNTRAINED_WARNING, load_presets
from detectors.training.cache import EmbedCache
from detectors.training.datasets import DEEPACTION_REAL_SOURCE, load_dataset
from detectors.training.download import KNOWN_DATASETS
from detectors.types import AI_LABEL, REAL_LABEL
from motionguard_dev.harness import TopicReader, WorkerProcess, free_port, new_topics, send_all, upload_event
from tests.hubmirror import HubMirror
from tests.videofactory import make_video

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PRESET = "clip-vit-b-32"
ARCHITECTURE = str(load_presets()[PRESET]["model"])
TAG = str(load_presets()[PRESET]["pretrained"])
DATASET = KNOWN_DATASETS["deepaction"]
#: DeepAction-shaped clips: (source folder, action folder).
CLIPS = [
    (DEEPACTION_REAL_SOURCE, "person_walking"),
    (DEEPACTION_REAL_SOURCE, "person_jumping"),
    ("VideoPoet", "person_walking"),
    ("VideoPoet", "person_jumping"),
]


def weights_location() -> tuple[str, str]:
    """(hub repo id, file name) open_clip downloads for ``ARCHITECTURE``/``TAG``, safetensors first."""
    hf_hub = open_clip.get_pretrained_cfg(ARCHITECTURE, TAG)["hf_hub"]
    repo_id, filename = os.path.split(hf_hub)
    return repo_id, filename or HF_SAFE_WEIGHTS_NAME


def hub_env(endpoint: str, hf_home: Path, **extra: str) -> dict[str, str]:
    """The test process's environment with huggingface_hub pointed at ``endpoint`` and ``hf_home``.

    Offline mode and cache settings are given explicitly (not only left out), so
    they also win where a harness merges this into the inherited environment.
    """
    prefixes = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "MOTIONGUARD_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        {
            "HF_ENDPOINT": endpoint,
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            **extra,
        }
    )
    return env


def motionguard(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised ``ARCHITECTURE`` state dict, in open_clip's hub file format."""
    path = tmp_path_factory.mktemp("checkpoint") / weights_location()[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = open_clip.create_model(ARCHITECTURE)
        state = {name: tensor.detach().to(torch.float16).contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def dataset_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deepaction-upstream")
    for i, (source, action) in enumerate(CLIPS):
        make_video(root / source / action / f"{i}.mp4", seconds=0.5, width=64, height=48, fps=8, source="testsrc2")
    return root


@pytest.fixture(scope="module")
def hub(checkpoint: Path, dataset_folder: Path) -> Iterator[HubMirror]:
    with HubMirror() as mirror:
        repo_id, filename = weights_location()
        mirror.add_file("model", repo_id, filename, checkpoint)
        mirror.add_folder("dataset", DATASET.repo_id, dataset_folder)
        yield mirror


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One huggingface_hub cache for the module: the weights are downloaded once."""
    return tmp_path_factory.mktemp("hf-home")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=1.0, width=96, height=64, fps=10)


def assert_trained_model(model: Mapping[str, Any]) -> None:
    assert model["untrained"] is False
    assert model["embedder"]["architecture"] == ARCHITECTURE
    assert model["embedder"]["pretrained"] == TAG


def test_scan_with_pretrained_weights_downloads_them_from_the_hub(
    hub: HubMirror, hf_home: Path, clip: Path, checkpoint: Path
) -> None:
    env = hub_env(hub.url, hf_home)
    result = motionguard(env, "scan", str(clip), "--pretrained", TAG, "--device", "cpu", "--frames", "4", "--json")
    assert result.returncode == 0, result.stderr
    assert UNTRAINED_WARNING not in result.stderr
    assert "QuickGELU mismatch" not in result.stderr  # OpenAI's weights get the activation they were trained with
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert line["error"] is None and line["verdict"] in ("ai_generated", "needs_review", "real")
    assert line["warnings"] == []
    assert_trained_model(line["model"])
    repo_id, filename = weights_location()
    assert hub.asked("HEAD", f"/{repo_id}/resolve/main/{filename}")
    cached = list((hf_home / "hub").glob(f"models--{repo_id.replace('/', '--')}/snapshots/*/{filename}"))
    assert len(cached) == 1 and cached[0].read_bytes() == checkpoint.read_bytes()


def test_dataset_download_fetches_the_dataset_and_embed_accepts_it(
    hub: HubMirror, hf_home: Path, dataset_folder: Path, tmp_path: Path
) -> None:
    env = hub_env(hub.url, hf_home)
    out = tmp_path / "deepaction"
    result = motionguard(env, "dataset", "download", "deepaction", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert hub.asked("GET", f"/api/datasets/{DATASET.repo_id}")
    upstream = sorted(p.relative_to(dataset_folder) for p in dataset_folder.rglob("*.mp4"))
    downloaded = sorted(p.relative_to(out) for p in out.rglob("*.mp4"))
    assert downloaded == upstream
    assert all((out / p).read_bytes() == (dataset_folder / p).read_bytes() for p in upstream)
    data = load_dataset(out)
    assert sorted((item.label, item.generator, item.group) for item in data.items) == sorted(
        (REAL_LABEL if source == DEEPACTION_REAL_SOURCE else AI_LABEL,
         None if source == DEEPACTION_REAL_SOURCE else source, action)
        for source, action in CLIPS
    )  # fmt: skip

    cache = tmp_path / "cache"
    result = motionguard(env, "embed", str(out), "--out", str(cache), "--device", "cpu", "--frames", "2")
    assert result.returncode == 0, result.stderr
    assert UNTRAINED_WARNING not in result.stderr
    index = EmbedCache(cache).read_index()
    assert index.complete and len(index.ok) == len(CLIPS)
    assert not index.identity.untrained
    assert index.identity.embedder["architecture"] == ARCHITECTURE
    assert index.identity.embedder["pretrained"] == TAG


@pytest.mark.kafka
def test_worker_with_pretrained_weights_is_ready_and_its_verdicts_are_trained(
    hub: HubMirror, hf_home: Path, clip: Path, kafka_broker: Any, tmp_path: Path
) -> None:
    env = hub_env(hub.url, hf_home, MOTIONGUARD_PRETRAINED=TAG)
    process = WorkerProcess(
        bootstrap=kafka_broker.bootstrap_servers,
        topics=new_topics("hub"),
        allowed_root=clip.parent,
        data_dir=tmp_path / "worker",
        args=("--model", PRESET),
        extra_env={k: v for k, v in env.items() if k.startswith(("HF_", "TRANSFORMERS_", "MOTIONGUARD_"))},
    )
    with process:
        process.start(wait_ready_seconds=240)
        reader = TopicReader(process.bootstrap, process.topics.verdicts)
        try:
            send_all(process.bootstrap, process.topics.uploads, [("hub-1", upload_event("hub-1", clip.as_uri()))])
            records = reader.wait_for({"hub-1"}, timeout_seconds=180, workers=(process,))
        finally:
            reader.close()
        assert process.terminate() == 0
    (verdict,) = [r for r in records if r.get("video_id") == "hub-1"]
    assert verdict["error"] is None, verdict
    assert verdict["warnings"] == []
    assert_trained_model(verdict["model"])
    assert UNTRAINED_WARNING not in process.log_tail(400)


# --- an unreachable hub ------------------------------------------------------------


@pytest.fixture(scope="module")
def closed_endpoint() -> str:
    """A local URL nothing listens on (a port just freed)."""
    return f"http://127.0.0.1:{free_port()}"


def unreachable_commands(clip: Path, dataset: Path, tmp: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    return {
        "scan": (["scan", str(clip), "--pretrained", TAG, "--device", "cpu"], {}),
        "embed": (["embed", str(dataset), "--out", str(tmp / "cache"), "--device", "cpu"], {}),
        "worker": (["worker", "--model", PRESET, "--device", "cpu"], {"MOTIONGUARD_PRETRAINED": TAG}),
        "dataset download": (["dataset", "download", "deepaction", "--out", str(tmp / "ds")], {}),
    }


@pytest.mark.parametrize("command", ["scan", "embed", "worker", "dataset download"])
def test_an_unreachable_hub_is_one_clear_error_line(
    command: str, closed_endpoint: str, clip: Path, dataset_folder: Path, tmp_path: Path
) -> None:
    args, extra = unreachable_commands(clip, dataset_folder, tmp_path)[command]
    result = motionguard(hub_env(closed_endpoint, tmp_path / "hf-home", **extra), *args)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, output
    (line,) = errors
    assert line.startswith("error: could not download ")
    assert f"from the Hugging Face hub at {closed_endpoint}: " in line
    assert f"{closed_endpoint}/" in line.split(": ", 2)[2]  # the request that failed
    assert "HF_ENDPOINT" in line and "HF_HUB_OFFLINE" in line
    for noise in ("Retrying", "thrown while requesting", "Traceback", "WARNING"):
        assert noise not in output


def test_offline_mode_with_an_empty_cache_says_so_in_one_line(clip: Path, tmp_path: Path) -> None:
    env = hub_env("http://127.0.0.1:9", tmp_path / "hf-home", HF_HUB_OFFLINE="1")
    result = motionguard(env, "scan", str(clip), "--pretrained", TAG, "--device", "cpu")
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: could not find the pretrained weights {ARCHITECTURE}/{TAG} in the local cache ")
    assert str(tmp_path / "hf-home") in lines[0]
