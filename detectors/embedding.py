"""CLIP-family image and text embeddings with open_clip.

This is the one module of the scoring core that imports torch and open_clip.
Everything it returns is a numpy ``float32`` array whose rows are L2-normalised,
so the classifiers downstream never see a tensor.

Models are named either by a *preset* (``detectors/presets.json``: a name for a
model plus pretrained tag, e.g. ``clip-vit-b-32``) or by an open_clip
architecture name (``ViT-B-32``, ``ViT-L-14``, ``ViT-B-16-SigLIP``...) together
with a pretrained tag.  Fine-tuned FT-CLIP weights are loaded from a local
``.safetensors`` file on top of the named architecture; no pickle-based
checkpoint is ever loaded.

Weights come from the Hugging Face hub (through open_clip) where the machine can
reach it (``HF_ENDPOINT`` names a mirror; see :mod:`detectors.hub`); when it
cannot, loading fails with one :class:`ModelUnavailableError` line that says
what was tried and what to do.  ``pretrained=None`` builds the architecture
with random weights: such an embedder reports ``untrained=True`` and every
caller must say so loudly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from detectors.errors import ModelUnavailableError, UnknownModelError
from detectors.hub import first_line, hub_failure_message, is_hub_failure, quiet_hub_retries
from detectors.types import FloatArray, UInt8Array

logger = logging.getLogger(__name__)

UNTRAINED_WARNING = "untrained model: verdicts are meaningless"

#: Seed of the random initialisation of untrained (``pretrained=None``) models, so
#: that every process building "ViT-B-32 with random weights" builds the same one
#: (a bundle trained on such embeddings then still matches them in ``scan``).
RANDOM_INIT_SEED = 0

_PACKAGE_DIR = Path(__file__).resolve().parent
_PRESETS_FILE = _PACKAGE_DIR / "presets.json"
_MODEL_CONFIG_DIR = _PACKAGE_DIR / "model_configs"

Device = Literal["auto", "cpu", "cuda"]


@cache
def _register_model_configs() -> None:
    """Make the architectures shipped in ``model_configs/`` known to open_clip."""
    open_clip.add_model_config(_MODEL_CONFIG_DIR)


@cache
def load_presets() -> dict[str, dict[str, Any]]:
    """Preset name -> ``{"model", "pretrained", "description"}``."""
    with _PRESETS_FILE.open(encoding="utf-8") as fh:
        presets: dict[str, dict[str, Any]] = json.load(fh)
    return presets


def known_architectures() -> list[str]:
    _register_model_configs()
    return sorted(open_clip.list_models())


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class EmbedderSpec:
    """Everything needed to rebuild the same embedder.

    ``model`` is a preset or an open_clip architecture.  ``pretrained`` is an
    open_clip pretrained tag, or ``None`` for random weights.  ``weights`` is a
    local ``.safetensors`` file (FT-CLIP) loaded on top of the architecture; its
    ``weights_sha256`` is checked when given.
    """

    model: str = "clip-vit-b-32"
    pretrained: str | None = "openai"
    weights: str | None = None
    weights_sha256: str | None = None
    device: Device = "auto"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    @classmethod
    def from_names(
        cls,
        model: str,
        pretrained: str | None = None,
        *,
        weights: str | None = None,
        device: Device = "auto",
        batch_size: int = 64,
    ) -> EmbedderSpec:
        """Resolve a preset or architecture name; ``pretrained="none"`` means random.

        With a preset and no explicit ``pretrained``, the preset's tag is used.
        """
        presets = load_presets()
        tag: str | None
        if pretrained is None:
            tag = presets[model]["pretrained"] if model in presets else None
        else:
            tag = None if pretrained.lower() in ("none", "") else pretrained
        return cls(model=model, pretrained=tag, weights=weights, device=device, batch_size=batch_size)

    @property
    def architecture(self) -> str:
        presets = load_presets()
        if self.model in presets:
            return str(presets[self.model]["model"])
        return self.model

    @property
    def untrained(self) -> bool:
        return self.pretrained is None and self.weights is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(device: Device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError("device 'cuda' was requested but no CUDA GPU is available")
    return torch.device(device)


def _check_known(spec: EmbedderSpec) -> None:
    architecture = spec.architecture
    architectures = known_architectures()
    if architecture not in architectures:
        presets = ", ".join(sorted(load_presets()))
        raise UnknownModelError(
            f"unknown model {spec.model!r}. Presets: {presets}. "
            f"open_clip architectures ({len(architectures)}): {', '.join(architectures)}"
        )
    if spec.pretrained is not None:
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        if spec.pretrained not in tags:
            known = ", ".join(tags) if tags else "none (use --pretrained none or a weights file)"
            raise UnknownModelError(
                f"model {architecture!r} has no pretrained weights tagged {spec.pretrained!r}. Known tags: {known}"
            )


def _tag_uses_quick_gelu(architecture: str, pretrained: str | None) -> bool:
    """Whether the weights tagged ``pretrained`` were trained with QuickGELU (OpenAI's CLIP were).

    open_clip's plain architecture configs (``ViT-B-32``) use GELU; building them
    with such weights would only warn and give slightly wrong embeddings.
    """
    if pretrained is None:
        return False
    return bool(open_clip.get_pretrained_cfg(architecture, pretrained).get("quick_gelu", False))


def _load_safetensors_weights(model: torch.nn.Module, spec: EmbedderSpec) -> str:
    """Load a local safetensors state dict into ``model``; return its sha256."""
    from safetensors.torch import load_file  # the only weights format we accept

    path = Path(spec.weights or "")
    if path.suffix != ".safetensors":
        raise ModelUnavailableError(
            f"weights file {path} must be a .safetensors file (pickle checkpoints are never loaded)"
        )
    if not path.is_file():
        raise ModelUnavailableError(f"weights file {path} does not exist")
    digest = sha256_file(path)
    if spec.weights_sha256 is not None and digest != spec.weights_sha256:
        raise ModelUnavailableError(
            f"weights file {path} has sha256 {digest}, expected {spec.weights_sha256}: the file was changed or replaced"
        )
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelUnavailableError(f"weights file {path} does not fit architecture {spec.architecture!r}: {e}") from e
    return digest


class ClipEmbedder:
    """An open_clip model plus its preprocessing, built from one :class:`EmbedderSpec`.

    Frames arrive as ``uint8`` RGB arrays already resized and centre-cropped to
    :attr:`image_size` (the sampler does that inside ffmpeg); the embedder only
    normalises them with the model's own mean and std, as batched tensor
    operations on the model's device.
    """

    def __init__(self, spec: EmbedderSpec) -> None:
        _register_model_configs()
        _check_known(spec)
        self.device = resolve_device(spec.device)
        architecture = spec.architecture
        logger.info(
            "loading embedder %s (pretrained=%s, weights=%s) on %s",
            architecture,
            spec.pretrained,
            spec.weights,
            self.device,
        )
        with quiet_hub_retries() as noise:  # one error line, not a retry warning per attempt
            try:
                with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left as it was
                    if spec.pretrained is None:
                        torch.manual_seed(RANDOM_INIT_SEED)
                    model, _, preprocess = open_clip.create_model_and_transforms(
                        architecture,
                        pretrained=spec.pretrained,
                        device=self.device,
                        force_quick_gelu=_tag_uses_quick_gelu(architecture, spec.pretrained),
                    )
            except Exception as e:  # open_clip/hub raise many types for an unreachable hub
                if is_hub_failure(e) or noise.first_failure is not None:
                    raise ModelUnavailableError(
                        hub_failure_message(f"the pretrained weights {architecture}/{spec.pretrained}", e, noise)
                        + "; or load local fine-tuned weights with --pretrained none --weights FILE.safetensors"
                    ) from e
                raise ModelUnavailableError(
                    f"could not load weights {architecture}/{spec.pretrained}: {first_line(e)}. "
                    "Pass local fine-tuned weights (--pretrained none --weights FILE.safetensors), "
                    f"or --pretrained none to run with random weights ({UNTRAINED_WARNING})"
                ) from e
        if spec.weights is not None:
            digest = _load_safetensors_weights(model, spec)
            spec = replace(spec, weights_sha256=digest)
        self.spec = spec
        self.model = model.eval()
        self.preprocess = preprocess
        cfg: dict[str, Any] = dict(getattr(model.visual, "preprocess_cfg", {}))
        size = cfg.get("size", 224)
        height, width = (size, size) if isinstance(size, int) else size
        if height != width:
            raise ModelUnavailableError(f"non-square model input {size} is not supported")
        self._image_size = int(height)
        self._resize_mode = str(cfg.get("resize_mode", "shortest"))
        if self._resize_mode not in ("shortest", "squash"):
            raise ModelUnavailableError(
                f"model {architecture!r} preprocesses with resize_mode {self._resize_mode!r}; "
                "MotionGuard's sampler supports 'shortest' and 'squash'"
            )
        mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32)
        std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32)
        # Fold 1/255, mean and std into one multiply-add: x * scale + shift.
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(self.device)
        self._embedding_dim = int(getattr(model.visual, "output_dim", 0)) or int(
            model.encode_image(torch.zeros(1, 3, height, width, device=self.device)).shape[-1]
        )
        self._tokenizer = open_clip.get_tokenizer(architecture)
        self._autocast_dtype: torch.dtype | None = None
        if self.device.type == "cuda":
            self._autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if self.untrained:
            logger.warning("%s: %s built with random weights", UNTRAINED_WARNING, architecture)

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def untrained(self) -> bool:
        return self.spec.untrained

    @property
    def resize_mode(self) -> str:
        return self._resize_mode

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    def describe(self) -> dict[str, object]:
        return {
            "name": self.spec.model,
            "architecture": self.spec.architecture,
            "pretrained": self.spec.pretrained,
            "weights_sha256": self.spec.weights_sha256,
            "device": self.device.type,
            "untrained": self.untrained,
        }

    def _autocast(self) -> Any:
        if self._autocast_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self._autocast_dtype)

    @torch.inference_mode()
    def embed_frames(self, frames: UInt8Array) -> FloatArray:
        """``(n, size, size, 3)`` uint8 RGB -> ``(n, dim)`` L2-normalised float32."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (n, h, w, 3), got shape {frames.shape}")
        if frames.shape[1] != self._image_size or frames.shape[2] != self._image_size:
            raise ValueError(
                f"frames are {frames.shape[1]}x{frames.shape[2]}, model expects {self._image_size}x{self._image_size}"
            )
        outputs: list[torch.Tensor] = []
        pin = self.device.type == "cuda"
        for start in range(0, frames.shape[0], self.spec.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.spec.batch_size]))
            if pin:
                chunk = chunk.pin_memory()
            x = chunk.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
            x = x * self._scale + self._shift
            with self._autocast():
                features = self.model.encode_image(x)
            outputs.append(F.normalize(features.float(), dim=-1).cpu())
        if not outputs:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return torch.cat(outputs).numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> FloatArray:
        """Texts -> ``(n, dim)`` L2-normalised float32."""
        tokens = self._tokenizer(list(texts)).to(self.device)
        with self._autocast():
            features = self.model.encode_text(tokens)
        return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)
