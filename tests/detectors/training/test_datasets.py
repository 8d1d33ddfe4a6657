"""DeepAction layout, CSV manifests and grouped splits that never leak a group."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.errors import DatasetError
from detectors.training.datasets import (
    SplitConfig,
    VideoItem,
    items_in,
    load_dataset,
    load_deepaction,
    load_manifest,
    split_groups,
    split_summary,
    write_manifest,
)
from detectors.types import AI_LABEL, REAL_LABEL
from tests.detectors.training.conftest import constructed_items


def fake_deepaction(root: Path, sources: list[str], actions: int, clips: int) -> Path:
    for source in sources:
        for a in range(actions):
            folder = root / source / f"action_{a:02d}-jumping_rope"
            folder.mkdir(parents=True)
            for c in "abcde"[:clips]:
                (folder / f"{c}.mp4").write_bytes(b"\0")
            (folder / "notes.txt").write_text("not a video")
    return root


def test_deepaction_layout_pexels_is_real_and_actions_are_groups(tmp_path: Path) -> None:
    root = fake_deepaction(tmp_path / "da", ["Pexels", "Veo", "RunwayML"], actions=3, clips=2)
    dataset = load_deepaction(root)
    assert dataset.kind == "deepaction"
    assert len(dataset) == 3 * 3 * 2
    real = [i for i in dataset.items if i.label == REAL_LABEL]
    assert len(real) == 6 and all(i.generator is None for i in real)
    assert {i.generator for i in dataset.items if i.label == AI_LABEL} == {"Veo", "RunwayML"}
    assert {i.group for i in dataset.items} == {"action_00-jumping_rope", "action_01-jumping_rope",
                                                "action_02-jumping_rope"}  # fmt: skip
    assert dataset.items[0].action == "action 00 jumping rope"
    assert dataset.summary()["classes"] == {"RunwayML": 6, "Veo": 6, "real": 6}
    assert load_dataset(root).items == dataset.items


def test_a_folder_without_pexels_is_refused(tmp_path: Path) -> None:
    root = fake_deepaction(tmp_path / "da", ["Veo"], actions=1, clips=1)
    with pytest.raises(DatasetError, match="Pexels"):
        load_deepaction(root)


def test_manifest_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "sets" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,label,generator,group,action\n"
        "clips/a.mp4,real,,g1,walking\n"
        "/abs/b.mp4,ai_generated,Veo,g1,\n"
        "clips/c.mp4,ai_generated,,g2,\n"
    )
    dataset = load_manifest(manifest)
    assert [i.path for i in dataset.items] == [
        str(tmp_path / "sets" / "clips" / "a.mp4"), "/abs/b.mp4", str(tmp_path / "sets" / "clips" / "c.mp4"),
    ]  # fmt: skip
    assert dataset.items[0].action == "walking"
    assert dataset.items[1].generator == "Veo"
    assert dataset.items[2].generator == "unknown"
    assert load_dataset(manifest).items == dataset.items


def test_manifest_round_trip(tmp_path: Path) -> None:
    items = [
        VideoItem(str(tmp_path / "v" / "a.mp4"), REAL_LABEL, None, "g1", "waving"),
        VideoItem(str(tmp_path / "v" / "b.mp4"), AI_LABEL, "Veo", "g2"),
    ]
    path = write_manifest(tmp_path / "m.csv", items)
    assert "v/a.mp4" in path.read_text()
    assert list(load_manifest(path).items) == items


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("path,label,group\nx.mp4,real,g\n", "generator"),
        ("path,label,generator,group\nx.mp4,fake,,g\n", "label must be"),
        ("path,label,generator,group\nx.mp4,real,Veo,g\n", "cannot have a generator"),
        ("path,label,generator,group\nx.mp4,real,,\n", "empty group"),
        ("path,label,generator,group\nx.mp4,ai_generated,real,g\n", "cannot be a generator"),
        ("path,label,generator,group\n", "lists no videos"),
    ],
)
def test_bad_manifests_say_what_is_wrong(tmp_path: Path, body: str, message: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(body)
    with pytest.raises(DatasetError, match=message):
        load_manifest(manifest)


def test_missing_dataset_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nothing.csv")


@pytest.mark.parametrize("seed", range(8))
def test_grouped_split_never_leaks_a_group(seed: int) -> None:
    # DeepAction-like (every group holds every class) plus single-class groups.
    items = [
        VideoItem(f"/d/{source}/{a}/{c}.mp4", REAL_LABEL if source == "Pexels" else AI_LABEL,
                  None if source == "Pexels" else source, f"action{a}")
        for source in ("Pexels", "Veo", "VideoPoet") for a in range(20) for c in "ab"
    ] + constructed_items({REAL_LABEL: 9, "genA": 6}, group_size=2)  # fmt: skip
    assignment = split_groups(items, SplitConfig(seed=seed, val_fraction=0.15, test_fraction=0.2))
    assert set(assignment) == {i.group for i in items}
    sides = {split: {i.group for i in items_in(items, assignment, split)} for split in ("train", "val", "test")}
    assert not sides["train"] & sides["test"]
    assert not sides["train"] & sides["val"]
    assert not sides["val"] & sides["test"]
    # Every item's path sits on exactly one side, and every stratum reaches every side.
    assert sum(len(items_in(items, assignment, s)) for s in ("train", "val", "test")) == len(items)
    assert len([g for g in sides["test"] if g.startswith("action")]) == 4
    assert {i.class_name for i in items_in(items, assignment, "test")} == {
        REAL_LABEL,
        "Veo",
        "VideoPoet",
        "genA",
    }


def test_split_is_deterministic_and_depends_on_the_seed() -> None:
    items = constructed_items({REAL_LABEL: 30, "genA": 30})
    first = split_groups(items, SplitConfig(seed=1))
    assert split_groups(list(reversed(items)), SplitConfig(seed=1)) == first
    assert split_groups(items, SplitConfig(seed=2)) != first


def test_split_keeps_a_training_group_in_tiny_strata() -> None:
    items = constructed_items({REAL_LABEL: 2, "genA": 1})
    assignment = split_groups(items, SplitConfig(val_fraction=0.4, test_fraction=0.5))
    assert "train" in {assignment[g] for g in ("real-g0", "real-g1")}
    assert assignment["genA-g0"] == "train"


def test_split_summary_counts_classes_and_lists_groups() -> None:
    items = constructed_items({REAL_LABEL: 10, "genA": 5, "genB": 5})
    assignment = split_groups(items, SplitConfig(seed=0))
    summary = split_summary(items, assignment)
    assert sum(summary[s]["videos"] for s in ("train", "val", "test")) == 20
    assert summary["test"]["group_names"] == sorted(g for g, s in assignment.items() if s == "test")
    assert set(summary["train"]["generators"]) == {"genA", "genB"}


def test_bad_split_fractions_are_refused() -> None:
    with pytest.raises(ValueError):
        SplitConfig(val_fraction=0.5, test_fraction=0.5)
