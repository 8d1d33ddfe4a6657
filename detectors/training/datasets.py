"""Labelled video datasets and grouped splits.

Two sources of labelled videos:

* **DeepAction** (``faridlab/deepaction_v1``): ``ROOT/<Source>/<action>/<clip>.mp4``.
  The ``Pexels`` source holds the real videos; every other source folder is a
  text-to-video generator.  The action folder is the *group*: all clips of one
  action come from one text prompt, so a split by action keeps a prompt on one
  side only.
* A **CSV manifest** with the columns ``path,label,generator,group`` (and an
  optional ``action``).  ``path`` is relative to the manifest's folder (or
  absolute), ``label`` is ``real`` or ``ai_generated``, ``generator`` names the
  generator of an AI video (empty for real ones), ``group`` is whatever must not
  straddle a split (source video, prompt, performer...).

:func:`split_groups` assigns whole groups to ``train`` / ``val`` / ``test``,
stratified by the classes a group contains, deterministically from a seed.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detectors.errors import DatasetError
from detectors.types import AI_LABEL, REAL_LABEL

logger = logging.getLogger(__name__)

#: DeepAction's folder of real (camera) videos.
DEEPACTION_REAL_SOURCE = "Pexels"
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"})
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "generator", "group")
#: Generator name for AI videos whose generator a manifest does not give.
UNKNOWN_GENERATOR = "unknown"

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class VideoItem:
    """One labelled video.

    ``label`` is ``real`` or ``ai_generated``; ``generator`` is ``None`` for real
    videos; ``class_name`` is the multi-class label (``real`` or the generator).
    """

    path: str
    label: str
    generator: str | None
    group: str
    action: str | None = None

    def __post_init__(self) -> None:
        if self.label not in (REAL_LABEL, AI_LABEL):
            raise ValueError(f"label must be {REAL_LABEL!r} or {AI_LABEL!r}, got {self.label!r}")
        if self.label == REAL_LABEL and self.generator is not None:
            raise ValueError(f"a real video has no generator (got {self.generator!r} for {self.path})")
        if self.label == AI_LABEL and not self.generator:
            raise ValueError(f"an AI video needs a generator name ({self.path})")
        if self.generator in (REAL_LABEL, AI_LABEL):
            raise ValueError(f"{self.generator!r} cannot be a generator name ({self.path})")
        if not self.group:
            raise ValueError(f"empty group for {self.path}")

    @property
    def class_name(self) -> str:
        return REAL_LABEL if self.generator is None else self.generator

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "generator": self.generator,
            "group": self.group,
            "action": self.action,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoItem:
        return cls(
            path=str(data["path"]),
            label=str(data["label"]),
            generator=None if data.get("generator") in (None, "") else str(data["generator"]),
            group=str(data["group"]),
            action=None if data.get("action") in (None, "") else str(data["action"]),
        )


@dataclass(frozen=True)
class Dataset:
    """A named list of labelled videos; ``source`` is where it was read from."""

    name: str
    source: str
    kind: Literal["deepaction", "manifest"]
    items: tuple[VideoItem, ...]

    def __len__(self) -> int:
        return len(self.items)

    def summary(self) -> dict[str, Any]:
        return summarize(self.items)


def summarize(items: Iterable[VideoItem]) -> dict[str, Any]:
    """Counts per label, per generator and the number of groups (JSON-ready)."""
    items = list(items)
    return {
        "videos": len(items),
        "labels": dict(sorted(Counter(item.label for item in items).items())),
        "classes": dict(sorted(Counter(item.class_name for item in items).items())),
        "generators": dict(sorted(Counter(item.generator for item in items if item.generator).items())),
        "groups": len({item.group for item in items}),
    }


def action_text(folder: str) -> str:
    """A folder name such as ``person_jumping-rope`` as caption text."""
    return " ".join(folder.replace("_", " ").replace("-", " ").split())


# --- DeepAction --------------------------------------------------------------------


def load_deepaction(root: str | os.PathLike[str]) -> Dataset:
    """Read ``ROOT/<Source>/<action>/<clip>.<ext>`` (``Pexels`` is real)."""
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"dataset folder {base} does not exist")
    sources = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not any(s.name == DEEPACTION_REAL_SOURCE for s in sources):
        names = ", ".join(s.name for s in sources) or "none"
        raise DatasetError(
            f"{base} does not look like DeepAction: no {DEEPACTION_REAL_SOURCE}/ folder of real "
            f"videos (source folders found: {names}). Pass a CSV manifest for other layouts."
        )
    items: list[VideoItem] = []
    for source in sources:
        real = source.name == DEEPACTION_REAL_SOURCE
        for action in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for clip in sorted(action.iterdir()):
                if clip.is_file() and clip.suffix.lower() in VIDEO_EXTENSIONS:
                    items.append(
                        VideoItem(
                            path=str(clip.resolve()),
                            label=REAL_LABEL if real else AI_LABEL,
                            generator=None if real else source.name,
                            group=action.name,
                            action=action_text(action.name),
                        )
                    )
    if not items:
        raise DatasetError(f"no videos found under {base}/<Source>/<action>/")
    logger.info("read DeepAction layout at %s: %d videos", base, len(items))
    return Dataset(name=base.name, source=str(base.resolve()), kind="deepaction", items=tuple(items))


# --- CSV manifests -----------------------------------------------------------------


def load_manifest(path: str | os.PathLike[str]) -> Dataset:
    """Read a ``path,label,generator,group[,action]`` CSV manifest."""
    manifest = Path(path)
    if not manifest.is_file():
        raise DatasetError(f"manifest {manifest} does not exist")
    base = manifest.resolve().parent
    items: list[VideoItem] = []
    try:
        with manifest.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in MANIFEST_COLUMNS if c not in columns]
            if missing:
                raise DatasetError(
                    f"manifest {manifest} lacks the column(s) {', '.join(missing)}; "
                    f"expected a header {','.join(MANIFEST_COLUMNS)}[,action]"
                )
            for line, row in enumerate(reader, start=2):
                items.append(_manifest_item(row, base, manifest, line))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read manifest {manifest}: {e}") from e
    if not items:
        raise DatasetError(f"manifest {manifest} lists no videos")
    logger.info("read manifest %s: %d videos", manifest, len(items))
    return Dataset(name=manifest.stem, source=str(manifest.resolve()), kind="manifest", items=tuple(items))


def _manifest_item(row: Mapping[str, str | None], base: Path, manifest: Path, line: int) -> VideoItem:
    cells = {str(k).strip(): (v or "").strip() for k, v in row.items() if k is not None}
    where = f"{manifest}:{line}"
    if not cells["path"]:
        raise DatasetError(f"{where}: empty path")
    video = Path(cells["path"])
    video = video if video.is_absolute() else base / video
    label = cells["label"]
    if label not in (REAL_LABEL, AI_LABEL):
        raise DatasetError(f"{where}: label must be {REAL_LABEL!r} or {AI_LABEL!r}, got {label!r}")
    generator: str | None = cells["generator"] or None
    if label == REAL_LABEL and generator is not None:
        raise DatasetError(f"{where}: a real video cannot have a generator ({generator!r})")
    if label == AI_LABEL and generator is None:
        generator = UNKNOWN_GENERATOR
    group = cells["group"]
    if not group:
        raise DatasetError(f"{where}: empty group (every video needs the group it must not be split from)")
    try:
        return VideoItem(
            path=str(video.resolve()),
            label=label,
            generator=generator,
            group=group,
            action=cells.get("action") or None,
        )
    except ValueError as e:
        raise DatasetError(f"{where}: {e}") from e


def write_manifest(path: str | os.PathLike[str], items: Sequence[VideoItem]) -> Path:
    """Write items as a CSV manifest (paths relative to the manifest when possible)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.resolve().parent
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*MANIFEST_COLUMNS, "action"])
        for item in items:
            video = Path(item.path)
            try:
                shown = str(video.relative_to(base))
            except ValueError:
                shown = str(video)
            writer.writerow([shown, item.label, item.generator or "", item.group, item.action or ""])
    return out


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """A ``.csv`` file is a manifest; a folder is DeepAction's layout."""
    target = Path(path)
    if target.is_file() and target.suffix.lower() == ".csv":
        return load_manifest(target)
    if target.is_dir():
        return load_deepaction(target)
    if not target.exists():
        raise DatasetError(f"dataset {target} does not exist")
    raise DatasetError(f"dataset {target} is neither a CSV manifest nor a DeepAction folder")


# --- grouped splits ----------------------------------------------------------------


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of *groups* held out for validation and test, and the seed."""

    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be within [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave groups for training")

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "val_fraction": self.val_fraction, "test_fraction": self.test_fraction}


def _stable_order(names: Iterable[str], seed: int) -> list[str]:
    """A seeded permutation that does not depend on Python's hash seed."""
    ordered = sorted(set(names))
    key = int.from_bytes(hashlib.sha256(f"motionguard-split:{seed}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(key)
    return [ordered[i] for i in rng.permutation(len(ordered))]


def split_groups(items: Sequence[VideoItem], config: SplitConfig = SplitConfig()) -> dict[str, Split]:
    """Assign every group to ``train``, ``val`` or ``test``.

    Groups are stratified by the set of classes they contain (a DeepAction
    action holds every source; a manifest group often holds one class), so each
    split gets its share of every kind of group.  Within a stratum of ``n``
    groups, ``round(n * test_fraction)`` go to test and ``round(n *
    val_fraction)`` to validation, but at least one group stays in training,
    and a non-zero fraction takes at least one group once a stratum has three.
    """
    strata: dict[tuple[str, ...], set[str]] = {}
    classes_of: dict[str, set[str]] = {}
    for item in items:
        classes_of.setdefault(item.group, set()).add(item.class_name)
    for group, classes in classes_of.items():
        strata.setdefault(tuple(sorted(classes)), set()).add(group)
    assignment: dict[str, Split] = {}
    for stratum in sorted(strata):
        groups = _stable_order(strata[stratum], config.seed)
        n = len(groups)
        n_test = _share(n, config.test_fraction)
        n_val = _share(n, config.val_fraction)
        while n_test + n_val >= n and (n_test or n_val):
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        for index, group in enumerate(groups):
            assignment[group] = "test" if index < n_test else "val" if index < n_test + n_val else "train"
    return assignment


def _share(n: int, fraction: float) -> int:
    if fraction <= 0:
        return 0
    count = round(n * fraction)
    return max(count, 1) if n >= 3 else count


def items_in(items: Sequence[VideoItem], assignment: Mapping[str, Split], split: Split) -> list[VideoItem]:
    return [item for item in items if assignment.get(item.group) == split]


def split_summary(items: Sequence[VideoItem], assignment: Mapping[str, Split]) -> dict[str, Any]:
    """Per split: counts per class and generator, and the list of groups."""
    result: dict[str, Any] = {}
    for split in SPLITS:
        chosen = items_in(items, assignment, split)
        summary = summarize(chosen)
        summary["group_names"] = sorted({item.group for item in chosen})
        result[split] = summary
    return result
