"""FT-CLIP: contrastive fine-tuning of an open_clip model on labelled video frames.

Each training frame is paired with a caption that carries its label and, where
the dataset knows it, the action: ``"a real video of a person {action}"`` or
``"an AI-generated video of a person {action}"``.  The loss is CLIP's symmetric
contrastive loss with one change: many frames share a caption, so the captions
of a batch are de-duplicated and every frame with a caption is a positive for
it (image -> text: cross-entropy over the batch's distinct captions; text ->
image: cross-entropy against a uniform target over that caption's frames).
Pulling frames towards the caption of their label reshapes the image space for
the SVM heads and aligns it with real/AI prompts for frame-to-prompt.

The recipe of the paper's FT-CLIP is not public; this one is ours.  Training
uses only the *training* groups of the same grouped split as ``train`` (same
seed and fractions), so fine-tuning never sees a validation or test video.

Optimiser: AdamW on the trainable parameters (all of the image tower, or only
its last ``unfreeze_last`` blocks plus its head; optionally the text tower),
linear warm-up then cosine decay, bf16/fp16 autocast on a GPU.  A checkpoint
(full model + optimiser state, safetensors + JSON, never pickle) is written
every ``checkpoint_every`` steps and at the end; a run with the same settings
resumes from it.  Data order is a function of the seed and the epoch, so a
resumed run takes the same steps as an uninterrupted one (bit for bit on CPU).

Output: ``WEIGHTS.safetensors`` (the full model's state dict, which
``EmbedderSpec(weights=...)`` loads on top of the architecture) and
``WEIGHTS.json`` (its spec: architecture, base, sha256, recipe, data, losses).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import open_clip
import torch
import torch.nn.functional as F  # torch convention
from safetensors.torch import load_file, save_file

from detectors import __version__
from detectors.embedding import ClipEmbedder, Device, EmbedderSpec, sha256_file
from detectors.errors import DatasetError, ModelError, MotionGuardError
from detectors.training.datasets import Dataset, SplitConfig, VideoItem, items_in, split_groups, summarize
from detectors.types import AI_LABEL, REAL_LABEL, FrameSampler

logger = logging.getLogger(__name__)

SPEC_FORMAT = "motionguard-ft-clip"
REAL_TEMPLATE = "a real video of a person {action}"
AI_TEMPLATE = "an AI-generated video of a person {action}"
#: Parameter-name prefixes of the image tower's head (trained even with ``unfreeze_last=0``).
_HEAD_PREFIXES = ("ln_post", "proj", "attn_pool", "head", "trunk.norm", "trunk.fc_norm", "trunk.head")

#: Called as ``progress(stage, done, total, loss)``.
ProgressFn = Callable[[str, int, int, float | None], None]


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning recipe.  ``base`` is ``NAME[:TAG]`` (``ViT-B-32:openai``,
    ``clip-vit-b-32``, ``tiny-test``, ``MG-Tiny-ViT:none``)."""

    base: str = "clip-vit-b-32"
    base_weights: str | None = None
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 64
    learning_rate: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    unfreeze_last: int | None = None
    train_text: bool = False
    frames_per_video: int = 8
    seed: int = 0
    checkpoint_every: int = 100
    device: Device = "auto"
    split: SplitConfig = field(default_factory=SplitConfig)
    real_template: str = REAL_TEMPLATE
    ai_template: str = AI_TEMPLATE

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "frames_per_video", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("learning_rate must be > 0, weight_decay and warmup_steps >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be within [0, 1]")
        if self.unfreeze_last is not None and self.unfreeze_last < 0:
            raise ValueError("unfreeze_last must be >= 0 (or None for the whole image tower)")
        for template in (self.real_template, self.ai_template):
            if "{action}" not in template:
                raise ValueError(f"caption template {template!r} must contain {{action}}")

    def embedder_spec(self) -> EmbedderSpec:
        name, _, tag = self.base.partition(":")
        return EmbedderSpec.from_names(
            name,
            tag if tag else None,
            weights=self.base_weights,
            device=self.device,
            batch_size=self.batch_size,
        )

    def recipe(self) -> dict[str, Any]:
        """The settings that change the result (a resumed run must match them)."""
        data = asdict(self)
        data.pop("checkpoint_every")
        data.pop("device")
        return data


def caption(item: VideoItem, config: FinetuneConfig) -> str:
    template = config.real_template if item.label == REAL_LABEL else config.ai_template
    return " ".join(template.format(action=item.action or "").split())


def lr_at(step: int, total: int, config: FinetuneConfig) -> float:
    """Linear warm-up to ``learning_rate``, then cosine decay to ``min_lr_ratio * learning_rate``."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.min_lr_ratio
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# --- frames ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSet:
    """Training frames on disk (a ``uint8`` memmap) with a caption index per frame."""

    frames: npt.NDArray[np.uint8]
    caption_ids: npt.NDArray[np.intp]
    captions: tuple[str, ...]
    labels: tuple[str, ...]
    videos: int
    errors: tuple[dict[str, str], ...]


def extract_frames(
    items: Sequence[VideoItem],
    sampler: FrameSampler,
    image_size: int,
    work_dir: Path,
    config: FinetuneConfig,
    progress: ProgressFn | None = None,
    resize_mode: str = "shortest",
) -> FrameSet:
    """Sample every training video once into ``work_dir/frames.npy`` (reused when it matches)."""
    meta_path = work_dir / "frames.json"
    frames_path = work_dir / "frames.npy"
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "items": [i.to_dict() for i in items],
                "size": image_size,
                "resize_mode": resize_mode,
                "recipe": config.recipe(),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    if meta_path.is_file() and frames_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("fingerprint") == fingerprint:
            frames = np.load(frames_path, mmap_mode="r")
            return FrameSet(
                frames=frames,
                caption_ids=np.asarray(meta["caption_ids"], dtype=np.intp),
                captions=tuple(meta["captions"]),
                labels=tuple(meta["labels"]),
                videos=int(meta["videos"]),
                errors=tuple(meta["errors"]),
            )
    capacity = len(items) * config.frames_per_video
    partial = work_dir / "frames.partial.npy"
    store = np.lib.format.open_memmap(
        partial, mode="w+", dtype=np.uint8, shape=(max(capacity, 1), image_size, image_size, 3)
    )
    captions: list[str] = []
    caption_ids: list[int] = []
    labels: list[str] = []
    errors: list[dict[str, str]] = []
    count = 0
    videos = 0
    for done, item in enumerate(items, start=1):
        try:
            sampled = sampler.sample(item.path, image_size, resize_mode=resize_mode)
        except MotionGuardError as e:
            errors.append({"path": item.path, "code": e.code, "message": e.message})
            logger.info("finetune: cannot sample %s: %s", item.path, e.message)
            continue
        n = min(len(sampled), config.frames_per_video)
        if n == 0:
            continue
        text = caption(item, config)
        if text not in captions:
            captions.append(text)
        store[count : count + n] = sampled.frames[:n]
        caption_ids += [captions.index(text)] * n
        labels += [item.label] * n
        count += n
        videos += 1
        if progress is not None:
            progress("sampling frames", done, len(items), None)
    store.flush()
    del store
    if count == 0:
        partial.unlink(missing_ok=True)
        raise DatasetError("no training frame could be sampled for fine-tuning")
    trimmed = np.lib.format.open_memmap(partial, mode="r")[:count]
    np.save(frames_path, np.ascontiguousarray(trimmed))
    del trimmed
    partial.unlink(missing_ok=True)
    meta = {
        "fingerprint": fingerprint,
        "caption_ids": caption_ids,
        "captions": captions,
        "labels": labels,
        "videos": videos,
        "errors": errors,
    }
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    return FrameSet(
        frames=np.load(frames_path, mmap_mode="r"),
        caption_ids=np.asarray(caption_ids, dtype=np.intp),
        captions=tuple(captions),
        labels=tuple(labels),
        videos=videos,
        errors=tuple(errors),
    )


# --- the model ------------------------------------------------------------------------


def _vision_blocks(visual: torch.nn.Module) -> tuple[str, int]:
    """The parameter-name prefix of the image tower's transformer blocks and their count."""
    for prefix, path in (
        ("transformer.resblocks", ("transformer", "resblocks")),
        ("trunk.blocks", ("trunk", "blocks")),
    ):
        module: Any = visual
        for part in path:
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
            return prefix, len(module)
    raise ModelError(
        f"cannot find the transformer blocks of the image tower ({type(visual).__name__}); "
        "--unfreeze-last is not supported for this architecture"
    )


def set_trainable(model: torch.nn.Module, config: FinetuneConfig) -> list[str]:
    """Freeze everything except the chosen image blocks (+ head) and, optionally, the text tower."""
    visual: torch.nn.Module = model.visual  # type: ignore[assignment]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable: list[str] = []
    if config.unfreeze_last is None:
        chosen = {name for name, _ in visual.named_parameters()}
    else:
        prefix, count = _vision_blocks(visual)
        first = max(0, count - config.unfreeze_last)
        blocks = tuple(f"{prefix}.{i}." for i in range(first, count))
        chosen = {
            name for name, _ in visual.named_parameters() if name.startswith(blocks) or name.startswith(_HEAD_PREFIXES)
        }
    for name, parameter in visual.named_parameters():
        if name in chosen:
            parameter.requires_grad_(True)
            trainable.append(f"visual.{name}")
    if config.train_text:
        for name, parameter in model.named_parameters():
            if not name.startswith("visual.") and name != "logit_scale":
                parameter.requires_grad_(True)
                trainable.append(name)
    if not trainable:
        raise ModelError("fine-tuning would train no parameter")
    return trainable


class _Normalizer:
    """uint8 frames -> the model's normalised float input (the embedder's arithmetic)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        cfg: dict[str, Any] = dict(getattr(model.visual, "preprocess_cfg", {}))
        mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32)
        std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device)
        self.shift = (-mean / std).view(1, 3, 1, 1).to(device)
        self.device = device

    def __call__(self, frames: npt.NDArray[np.uint8]) -> torch.Tensor:
        # A copy: the frames may be a read-only memmap, which torch must not wrap.
        x = torch.from_numpy(np.array(frames, dtype=np.uint8)).to(self.device).permute(0, 3, 1, 2).float()
        return x * self.scale + self.shift


def contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    caption_index: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric CLIP loss over a batch's *distinct* captions (shared captions are all positives).

    ``image_features`` ``(B, d)`` and ``text_features`` ``(U, d)`` are unit rows;
    ``caption_index[i]`` is the row of frame ``i``'s caption.
    """
    logits = logit_scale * image_features @ text_features.T  # (B, U)
    image_to_text = F.cross_entropy(logits, caption_index)
    positives = F.one_hot(caption_index, num_classes=text_features.shape[0]).T.float()  # (U, B)
    targets = positives / positives.sum(dim=1, keepdim=True).clamp_min(1.0)
    present = positives.sum(dim=1) > 0
    text_to_image = -(targets * F.log_softmax(logits.T, dim=1)).sum(dim=1)[present].mean()
    return 0.5 * (image_to_text + text_to_image)


# --- checkpoints ------------------------------------------------------------------------


def _save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
) -> None:
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for index, values in opt_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().contiguous().cpu()
    tensors["rng.torch"] = torch.get_rng_state()
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp))
    meta = {
        **state,
        "param_groups": opt_state["param_groups"],
        "optim_scalars": {
            str(i): {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
            for i, values in opt_state["state"].items()
        },
    }
    json_tmp = path.with_suffix(".json.partial")
    json_tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp, path)
    os.replace(json_tmp, path.with_suffix(".json"))


def _load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    tensors = load_file(str(path))
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device) if name != "step" else value
    for index, scalars in meta.get("optim_scalars", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return meta


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneResult:
    weights: Path
    spec_path: Path
    spec: dict[str, Any]


def _batch_loss(
    model: Any,
    frames: npt.NDArray[np.uint8],
    caption_ids: npt.NDArray[np.intp],
    tokens: torch.Tensor,
    normalize: _Normalizer,
    autocast: Callable[[], Any],
    frozen_text: torch.Tensor | None,
) -> torch.Tensor:
    distinct, index = np.unique(caption_ids, return_inverse=True)
    with autocast():
        image = F.normalize(model.encode_image(normalize(frames)).float(), dim=-1)
        if frozen_text is not None:
            text = frozen_text[torch.as_tensor(distinct, device=frozen_text.device)]
        else:
            text = F.normalize(
                model.encode_text(tokens[torch.as_tensor(distinct, device=tokens.device)]).float(), dim=-1
            )
    index_t = torch.as_tensor(index, dtype=torch.long, device=image.device)
    return contrastive_loss(image, text, index_t, model.logit_scale.exp().float().detach())


def finetune(
    dataset: Dataset,
    sampler: FrameSampler,
    out: str | os.PathLike[str],
    config: FinetuneConfig,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
    resume: bool = True,
) -> FinetuneResult:
    """Fine-tune ``config.base`` on ``dataset``'s training groups; write the weights and their spec."""
    weights_path = Path(out)
    if weights_path.suffix != ".safetensors":
        raise ValueError(f"the weights file must end in .safetensors, got {weights_path}")
    work = Path(work_dir) if work_dir is not None else weights_path.with_name(weights_path.stem + ".work")
    work.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # a random-initialised base is reproducible too
        embedder = ClipEmbedder(config.embedder_spec())
    model: Any = embedder.model
    device = embedder.device
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    assignment = split_groups(dataset.items, config.split)
    train_items = items_in(dataset.items, assignment, "train")
    if not {i.label for i in train_items} >= {REAL_LABEL, AI_LABEL}:
        raise DatasetError("fine-tuning needs real and AI-generated videos in the training split")
    frame_set = extract_frames(
        train_items, sampler, embedder.image_size, work, config, progress, resize_mode=embedder.resize_mode
    )
    n = len(frame_set.caption_ids)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.max_steps or steps_per_epoch * config.epochs

    trainable = set_trainable(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    tokenizer = open_clip.get_tokenizer(embedder.spec.architecture)
    tokens = tokenizer(list(frame_set.captions)).to(device)
    normalize = _Normalizer(model, device)
    autocast_dtype = None
    if device.type == "cuda":
        autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def autocast() -> Any:
        if autocast_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=autocast_dtype)

    def text_features() -> torch.Tensor | None:
        if config.train_text:
            return None
        with torch.no_grad(), autocast():
            return F.normalize(model.encode_text(tokens).float(), dim=-1)

    def mean_loss() -> float:
        """The contrastive loss over *all* training frames and captions at once (no gradients).

        Unlike a batch loss it does not depend on which frames share a batch, so the
        values before and after training can be compared.
        """
        model.eval()
        with torch.no_grad(), autocast():
            image = torch.cat(
                [
                    F.normalize(
                        model.encode_image(normalize(frame_set.frames[start : start + config.batch_size])).float(),
                        dim=-1,
                    )
                    for start in range(0, n, config.batch_size)
                ]
            )
            text = F.normalize(model.encode_text(tokens).float(), dim=-1)
            index = torch.as_tensor(frame_set.caption_ids, dtype=torch.long, device=image.device)
            loss = contrastive_loss(image, text, index, model.logit_scale.exp().float())
        model.train()
        return float(loss)

    checkpoint = work / "checkpoint.safetensors"
    recipe_hash = hashlib.sha256(json.dumps(config.recipe(), sort_keys=True).encode()).hexdigest()
    step = 0
    history: list[dict[str, float]] = []
    initial_loss: float | None = None
    if resume and checkpoint.is_file():
        meta = json.loads(checkpoint.with_suffix(".json").read_text(encoding="utf-8"))
        if meta.get("recipe_hash") == recipe_hash:
            meta = _load_checkpoint(checkpoint, model, optimizer, device)
            step, history, initial_loss = int(meta["step"]), list(meta["history"]), meta["initial_loss"]
            logger.info("resuming fine-tuning at step %d of %d", step, total)
        else:
            logger.warning("ignoring the checkpoint in %s: it was made with other settings", work)
    if initial_loss is None:
        initial_loss = mean_loss()
    model.train()
    frozen = text_features()
    while step < total:
        epoch, position = divmod(step, steps_per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        rows = np.sort(order[position * config.batch_size : (position + 1) * config.batch_size])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, config)
        loss = _batch_loss(
            model, frame_set.frames[rows], frame_set.caption_ids[rows], tokens, normalize, autocast, frozen
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        step += 1
        loss_value = float(loss.detach())
        history.append({"step": step, "loss": round(loss_value, 6), "lr": optimizer.param_groups[0]["lr"]})
        if progress is not None:
            progress("fine-tuning", step, total, loss_value)
        if step % config.checkpoint_every == 0 or step == total:
            _save_checkpoint(
                checkpoint, model, optimizer,
                {"step": step, "history": history, "initial_loss": initial_loss, "recipe_hash": recipe_hash},
            )  # fmt: skip
    final_loss = mean_loss()
    model.eval()

    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    partial = weights_path.with_name(weights_path.name + ".partial")
    save_file(state, str(partial), metadata={"format": SPEC_FORMAT, "architecture": embedder.spec.architecture})
    os.replace(partial, weights_path)
    digest = sha256_file(weights_path)
    base_spec = embedder.spec
    spec = {
        "format": SPEC_FORMAT,
        "format_version": 1,
        "created_by": f"motionguard {__version__}",
        "architecture": base_spec.architecture,
        "model": base_spec.model,
        "base": {
            "name": config.base,
            "pretrained": base_spec.pretrained,
            "weights_sha256": base_spec.weights_sha256,
        },
        "weights": weights_path.name,
        "weights_sha256": digest,
        "load_with": {
            "embedder_spec": {
                "model": base_spec.architecture,
                "pretrained": None,
                "weights": weights_path.name,
            },
            "cli": f"--model {base_spec.architecture} --pretrained none --weights {weights_path.name}",
        },
        "recipe": config.recipe(),
        "trainable_parameters": len(trainable),
        "data": {
            "dataset": dataset.name,
            "source": dataset.source,
            "train": summarize(train_items),
            "train_groups": sorted({i.group for i in train_items}),
            "frames": n,
            "videos_sampled": frame_set.videos,
            "errors": list(frame_set.errors),
            "captions": list(frame_set.captions),
        },
        "steps": total,
        "initial_loss": round(initial_loss, 6),
        "final_loss": round(final_loss, 6),
        "history": history,
        "untrained_base": base_spec.untrained,
    }
    spec_path = weights_path.with_suffix(".json")
    spec_path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    logger.info("fine-tuned %s: loss %.4f -> %.4f in %d steps", config.base, initial_loss, final_loss, total)
    return FinetuneResult(weights=weights_path, spec_path=spec_path, spec=spec)


def load_weights_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``WEIGHTS.json`` (accepts the ``.safetensors`` path too)."""
    target = Path(path)
    spec_path = target.with_suffix(".json")
    try:
        spec: dict[str, Any] = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read the weights spec {spec_path}: {e}") from e
    if spec.get("format") != SPEC_FORMAT:
        raise ModelError(f"{spec_path} is not a MotionGuard FT-CLIP spec")
    return spec
