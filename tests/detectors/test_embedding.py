"""The open_clip embedder, on small random-initialised models (no weights ship or download here)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from detectors.embedding import ClipEmbedder, EmbedderSpec, load_presets
from detectors.errors import ModelUnavailableError, UnknownModelError


@pytest.fixture(scope="module")
def tiny() -> ClipEmbedder:
    return ClipEmbedder(EmbedderSpec.from_names("tiny-test", "none", device="cpu"))


def test_frames_become_unit_float32_rows(tiny: ClipEmbedder) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, tiny.image_size, tiny.image_size, 3), dtype=np.uint8)
    out = tiny.embed_frames(frames)
    assert out.dtype == np.float32
    assert out.shape == (5, tiny.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(out[0], out[1])


def test_batching_does_not_change_results(tiny: ClipEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (7, tiny.image_size, tiny.image_size, 3), dtype=np.uint8)
    whole = tiny.embed_frames(frames)
    monkeypatch.setattr(tiny, "spec", replace(tiny.spec, batch_size=2))
    np.testing.assert_allclose(tiny.embed_frames(frames), whole, atol=1e-5)


def test_normalisation_matches_open_clip_preprocess(tiny: ClipEmbedder) -> None:
    """Our folded uint8 -> normalised tensor path equals open_clip's own transform."""
    from PIL import Image

    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (tiny.image_size, tiny.image_size, 3), dtype=np.uint8)
    reference = tiny.preprocess(Image.fromarray(frame)).unsqueeze(0)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(tiny.model.encode_image(reference), dim=-1).numpy()
    np.testing.assert_allclose(tiny.embed_frames(frame[None]), expected, atol=1e-4)


def test_texts_embed_to_unit_rows(tiny: ClipEmbedder) -> None:
    out = tiny.embed_texts(["a real video of a person", "an AI-generated video of a person"])
    assert out.shape == (2, tiny.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_random_weights_are_reported_as_untrained(tiny: ClipEmbedder) -> None:
    assert tiny.untrained
    assert tiny.describe()["untrained"] is True


def test_wrong_frame_size_is_refused(tiny: ClipEmbedder) -> None:
    with pytest.raises(ValueError, match="expects"):
        tiny.embed_frames(np.zeros((1, 10, 10, 3), dtype=np.uint8))


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError) as info:
        ClipEmbedder(EmbedderSpec.from_names("ViT-Q-99", "none"))
    assert "clip-vit-b-32" in info.value.message
    assert "ViT-L-14" in info.value.message


def test_unknown_pretrained_tag_lists_the_known_tags() -> None:
    with pytest.raises(UnknownModelError, match="openai"):
        ClipEmbedder(EmbedderSpec.from_names("ViT-B-32", "no-such-tag"))


def test_presets_name_real_architectures() -> None:
    from detectors.embedding import known_architectures

    architectures = set(known_architectures())
    for name, preset in load_presets().items():
        assert preset["model"] in architectures, name


def test_pretrained_none_means_random() -> None:
    assert EmbedderSpec.from_names("clip-vit-b-32", "none").untrained
    assert EmbedderSpec.from_names("clip-vit-b-32").pretrained == "openai"


def test_local_safetensors_weights_load_and_are_hashed(tiny: ClipEmbedder, tmp_path: Path) -> None:
    state = {k: v.clone() + 0.01 for k, v in tiny.model.state_dict().items()}
    weights = tmp_path / "ft.safetensors"
    save_file(state, str(weights))
    tuned = ClipEmbedder(EmbedderSpec.from_names("tiny-test", "none", weights=str(weights), device="cpu"))
    assert not tuned.untrained
    assert tuned.spec.weights_sha256 is not None and len(tuned.spec.weights_sha256) == 64
    frame = np.full((1, tiny.image_size, tiny.image_size, 3), 128, dtype=np.uint8)
    assert not np.allclose(tuned.embed_frames(frame), tiny.embed_frames(frame))
    with pytest.raises(ModelUnavailableError, match="sha256"):
        ClipEmbedder(EmbedderSpec(model="tiny-test", pretrained=None, weights=str(weights), weights_sha256="0" * 64))


def test_pickle_checkpoints_are_never_loaded(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ft.pt"
    checkpoint.write_bytes(b"not loaded")
    with pytest.raises(ModelUnavailableError, match="safetensors"):
        ClipEmbedder(EmbedderSpec.from_names("tiny-test", "none", weights=str(checkpoint)))


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "other.safetensors"
    save_file({"nonsense": torch.zeros(3)}, str(weights))
    with pytest.raises(ModelUnavailableError, match="does not fit"):
        ClipEmbedder(EmbedderSpec.from_names("tiny-test", "none", weights=str(weights)))
