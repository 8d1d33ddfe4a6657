"""FT-CLIP fine-tuning on a toy set with a random-initialised tiny model, on the CPU.

These tests show that the training loop runs, lowers its loss, resumes exactly
and writes weights the embedder and ``scan`` load.  A random tiny model on
synthetic patterns says nothing about detecting AI-generated video.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detectors.cli import create_app
from detectors.embedding import ClipEmbedder, EmbedderSpec
from detectors.sampling import FfmpegSampler, SamplingConfig
from detectors.training.datasets import Dataset, SplitConfig, load_manifest
from detectors.training.finetune import (
    FinetuneConfig,
    contrastive_loss,
    finetune,
    load_weights_spec,
    lr_at,
    set_trainable,
)
from tests.detectors.training.conftest import make_synthetic_manifest

TOY = FinetuneConfig(
    base="tiny-test",
    max_steps=12,
    batch_size=8,
    learning_rate=1e-3,
    warmup_steps=2,
    frames_per_video=4,
    device="cpu",
    checkpoint_every=4,
    split=SplitConfig(val_fraction=0.0, test_fraction=0.0),
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("toy")
    return load_manifest(make_synthetic_manifest(root, {"real": 4, "fractal": 2, "automaton": 2}))


def sampler() -> FfmpegSampler:
    return FfmpegSampler(SamplingConfig(frames=4))


def test_contrastive_loss_counts_shared_captions_as_positives() -> None:
    text = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    aligned = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    crossed = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    index = torch.tensor([0, 0, 1])
    scale = torch.tensor(10.0)
    low = contrastive_loss(aligned, text, index, scale)
    assert float(low) < 0.75  # two identical positives for caption 0 cannot both win: log(2) floor
    assert float(contrastive_loss(crossed, text, index, scale)) > 5.0


def test_learning_rate_warms_up_then_decays() -> None:
    config = replace(TOY, warmup_steps=4, learning_rate=1.0, min_lr_ratio=0.1)
    rates = [lr_at(step, 20, config) for step in range(20)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(rates[4:]))
    assert rates[-1] == pytest.approx(0.1, abs=0.01)


def test_unfreeze_last_trains_only_the_last_blocks() -> None:
    embedder = ClipEmbedder(EmbedderSpec.from_names("tiny-test", "none", device="cpu"))
    names = set_trainable(embedder.model, replace(TOY, unfreeze_last=1))
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in names)
    assert not any(n.startswith("visual.transformer.resblocks.0.") for n in names)
    assert "visual.proj" in names and "visual.conv1.weight" not in names
    assert not any(n.startswith("transformer.") for n in names)  # text tower frozen by default
    with_text = set_trainable(embedder.model, replace(TOY, train_text=True))
    assert any(n.startswith("transformer.") for n in with_text) and "logit_scale" not in with_text


@pytest.mark.slow
def test_finetune_lowers_its_loss_and_scan_loads_the_weights(toy: Dataset, tmp_path: Path) -> None:
    result = finetune(toy, sampler(), tmp_path / "ft.safetensors", TOY)
    spec = result.spec
    assert spec["final_loss"] < spec["initial_loss"]
    assert spec["steps"] == 12 and len(spec["history"]) == 12
    assert spec["untrained_base"] is True
    assert sorted(spec["data"]["captions"]) == [
        "a real video of a person moving", "an AI-generated video of a person",
    ]  # fmt: skip
    assert load_weights_spec(result.weights)["weights_sha256"] == spec["weights_sha256"]
    # The embedder loads the weights (and they changed the model).
    tuned = ClipEmbedder(EmbedderSpec.from_names("MG-Tiny-ViT", "none", weights=str(result.weights), device="cpu"))
    assert tuned.spec.weights_sha256 == spec["weights_sha256"] and not tuned.untrained
    # ... and so does `scan --model ARCH --pretrained none --weights FILE`.
    app = create_app()
    video = toy.items[0].path
    args = ["scan", video, "--model", "MG-Tiny-ViT", "--pretrained", "none", "--weights", str(result.weights),
            "--device", "cpu", "--json", "--frames", "4"]  # fmt: skip
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    row = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert row["error"] is None and row["frames_scored"] == 4
    assert row["model"]["untrained"] is False
    assert row["model"]["embedder"]["weights_sha256"] == spec["weights_sha256"]

    # FT weights -> embed -> train: the bundle carries the weights and scan --bundle uses them.
    training_app = app
    manifest = Path(toy.source)
    model = [
        "--model",
        "MG-Tiny-ViT",
        "--pretrained",
        "none",
        "--weights",
        str(result.weights),
        "--device",
        "cpu",
    ]
    runner = CliRunner()
    for args in (
        ["embed", str(manifest), "--out", str(tmp_path / "cache"), *model, "--frames", "4"],
        ["train", str(tmp_path / "cache"), "--classifier", "svm-linear", "--out", str(tmp_path / "bundle"),
         "--no-search", "--val-fraction", "0", "--test-fraction", "0"],
    ):  # fmt: skip
        done = runner.invoke(training_app, args)
        assert done.exit_code == 0, done.output
        assert "untrained model" not in done.output
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle["embedder"]["weights_sha256"] == spec["weights_sha256"]
    assert (tmp_path / "bundle" / "weights.safetensors").is_file()
    outcome = runner.invoke(app, ["scan", video, "--bundle", str(tmp_path / "bundle"), "--device", "cpu", "--json"])
    assert outcome.exit_code == 0, outcome.output
    row = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert row["model"]["classifier"] == "svm-linear" and row["model"]["untrained"] is False


@pytest.mark.slow
def test_an_interrupted_finetune_resumes_to_the_same_weights(toy: Dataset, tmp_path: Path) -> None:
    straight = finetune(toy, sampler(), tmp_path / "a" / "ft.safetensors", replace(TOY, max_steps=8))

    def interrupt_at_step_6(stage: str, done: int, total: int, loss: float | None) -> None:
        if stage == "fine-tuning" and done == 6:
            raise KeyboardInterrupt

    out = tmp_path / "b" / "ft.safetensors"
    with pytest.raises(KeyboardInterrupt):
        finetune(toy, sampler(), out, replace(TOY, max_steps=8), progress=interrupt_at_step_6)
    assert not out.exists()
    checkpoint = json.loads((out.parent / "ft.work" / "checkpoint.json").read_text())
    assert checkpoint["step"] == 4
    resumed = finetune(toy, sampler(), out, replace(TOY, max_steps=8))
    assert [h["loss"] for h in resumed.spec["history"]] == [h["loss"] for h in straight.spec["history"]]
    from safetensors.numpy import load_file

    a, b = load_file(str(straight.weights)), load_file(str(resumed.weights))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
