"""The embedding cache: resumable, keyed by content and embedder, errors counted not fatal."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from detectors.training.cache import EmbedCache, VideoRecord, embed_dataset, identity_for
from detectors.training.datasets import Dataset, VideoItem
from detectors.types import AI_LABEL, REAL_LABEL
from tests.detectors.training.conftest import FAKE_IDENTITY, ColourEmbedder, NameSampler, byte_files


def byte_dataset(root: Path, n: int = 6, bad: int = 0, missing: int = 0) -> Dataset:
    levels = {f"v{k}.mp4": 10 * (k + 1) for k in range(n)}
    levels.update({f"bad{k}.mp4": 1 for k in range(bad)})
    paths = byte_files(root, levels)
    paths += [root / f"gone{k}.mp4" for k in range(missing)]
    items = tuple(
        VideoItem(str(p), REAL_LABEL if i % 2 == 0 else AI_LABEL, None if i % 2 == 0 else "genA", f"g{i}")
        for i, p in enumerate(paths)
    )
    return Dataset(name="bytes", source=str(root), kind="manifest", items=items)


def test_every_video_is_embedded_once_and_reused(tmp_path: Path) -> None:
    dataset = byte_dataset(tmp_path / "videos", n=5)
    cache = EmbedCache(tmp_path / "cache")
    sampler, embedder = NameSampler(frames=3), ColourEmbedder()
    run = embed_dataset(dataset, cache, embedder, sampler, FAKE_IDENTITY, batch_frames=4)
    assert (run.embedded, run.reused, run.failed) == (5, 0, 0)
    assert embedder.frames_seen == 15
    index = cache.read_index()
    assert index.complete and index.counts() == {"ok": 5, "error": 0, "pending": 0}
    data = cache.gather(FAKE_IDENTITY, index.records)
    assert data.X.shape == (15, 4) and data.X.dtype == np.float32
    np.testing.assert_allclose(data.timestamps[:3], [0.0, 0.25, 0.5])
    # A second run decodes nothing; a renamed copy is recognised by its content.
    os.rename(dataset.items[0].path, tmp_path / "videos" / "renamed.mp4")
    renamed = dataclasses.replace(dataset.items[0], path=str(tmp_path / "videos" / "renamed.mp4"))
    again = dataclasses.replace(dataset, items=(renamed, *dataset.items[1:]))
    sampler2 = NameSampler(frames=3)
    run2 = embed_dataset(again, cache, ColourEmbedder(), sampler2, FAKE_IDENTITY)
    assert (run2.embedded, run2.reused) == (0, 5)
    assert sampler2.calls == []


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    dataset = byte_dataset(tmp_path / "videos", n=6)
    cache = EmbedCache(tmp_path / "cache")
    # One video per model call; Ctrl-C arrives during the third call.
    with pytest.raises(KeyboardInterrupt):
        embed_dataset(dataset, cache, ColourEmbedder(fail_after=2), NameSampler(), FAKE_IDENTITY, batch_frames=1)
    index = cache.read_index()
    assert not index.complete
    assert index.counts() == {"ok": 2, "error": 0, "pending": 4}
    sampler = NameSampler()
    run = embed_dataset(dataset, cache, ColourEmbedder(), sampler, FAKE_IDENTITY, batch_frames=1)
    assert (run.embedded, run.reused, run.failed) == (4, 2, 0)
    assert sorted(Path(p).name for p in sampler.calls) == ["v2.mp4", "v3.mp4", "v4.mp4", "v5.mp4"]
    assert cache.read_index().complete


def test_a_changed_embedder_does_not_reuse_entries(tmp_path: Path) -> None:
    dataset = byte_dataset(tmp_path / "videos", n=3)
    cache = EmbedCache(tmp_path / "cache")
    embed_dataset(dataset, cache, ColourEmbedder(), NameSampler(), FAKE_IDENTITY)
    for changed in (
        dataclasses.replace(FAKE_IDENTITY, embedder={**FAKE_IDENTITY.embedder, "weights_sha256": "ab" * 32}),
        dataclasses.replace(FAKE_IDENTITY, sampling={**FAKE_IDENTITY.sampling, "frames": 7}),
    ):
        assert changed.key != FAKE_IDENTITY.key
        sampler = NameSampler()
        run = embed_dataset(dataset, cache, ColourEmbedder(), sampler, changed)
        assert (run.embedded, run.reused) == (3, 0)
        assert len(sampler.calls) == 3
        assert cache.read_index().identity.key == changed.key


def test_a_changed_file_is_embedded_again(tmp_path: Path) -> None:
    dataset = byte_dataset(tmp_path / "videos", n=2)
    cache = EmbedCache(tmp_path / "cache")
    embed_dataset(dataset, cache, ColourEmbedder(), NameSampler(), FAKE_IDENTITY)
    Path(dataset.items[0].path).write_bytes(bytes([200]) * 20)
    run = embed_dataset(dataset, cache, ColourEmbedder(), NameSampler(), FAKE_IDENTITY)
    assert (run.embedded, run.reused) == (1, 1)


def test_bad_files_are_reported_and_counted_never_fatal(tmp_path: Path) -> None:
    dataset = byte_dataset(tmp_path / "videos", n=3, bad=2, missing=1)
    cache = EmbedCache(tmp_path / "cache")
    seen: list[VideoRecord] = []
    run = embed_dataset(dataset, cache, ColourEmbedder(), NameSampler(), FAKE_IDENTITY, on_video=seen.append)
    assert (run.embedded, run.failed) == (3, 3)
    assert len(seen) == 6
    codes = sorted(r.error_code or "" for r in run.errors)
    assert codes == ["corrupt_video", "corrupt_video", "not_found"]
    stored = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert stored["counts"] == {"ok": 3, "error": 3, "pending": 0}
    assert all(v["error"]["message"] for v in stored["videos"] if v["status"] == "error")


def test_variants_are_stored_beside_the_clean_entry(tmp_path: Path) -> None:
    cache = EmbedCache(tmp_path)
    sha = "ab" * 32
    cache.save(FAKE_IDENTITY, sha, np.ones((2, 3), dtype=np.float32), np.array([0.0, 1.0]))
    cache.save(FAKE_IDENTITY, sha, np.zeros((1, 3), dtype=np.float32), np.array([0.5]), variant="h264-crf28")
    clean = cache.load(FAKE_IDENTITY, sha)
    variant = cache.load(FAKE_IDENTITY, sha, "h264-crf28")
    assert clean is not None and variant is not None
    assert clean[0].shape == (2, 3) and variant[0].shape == (1, 3)
    assert not list(tmp_path.rglob(".*.npz"))  # no temporary files left behind


def test_real_videos_with_the_tiny_model(tmp_path: Path, videos) -> None:  # type: ignore[no-untyped-def]
    """The real sampler and a random-initialised tiny open_clip model, on two real files and a broken one."""
    from detectors.embedding import ClipEmbedder, EmbedderSpec
    from detectors.sampling import FfmpegSampler, SamplingConfig

    good = [videos.video(seconds=1, width=64, height=64, source=s) for s in ("testsrc2", "mandelbrot")]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    items = tuple(
        VideoItem(str(p), label, None if label == REAL_LABEL else "genA", f"g{i}")
        for i, (p, label) in enumerate(zip([*good, broken], [REAL_LABEL, AI_LABEL, AI_LABEL], strict=True))
    )
    dataset = Dataset(name="real-files", source=str(tmp_path), kind="manifest", items=items)
    embedder = ClipEmbedder(EmbedderSpec.from_names("tiny-test", "none", device="cpu"))
    sampling = SamplingConfig(frames=4)
    identity = identity_for(embedder, sampling)
    assert identity.untrained and identity.embedder["architecture"] == "MG-Tiny-ViT"
    assert identity.embedder["resize_mode"] == embedder.resize_mode == "shortest"
    cache = EmbedCache(tmp_path / "cache")
    run = embed_dataset(dataset, cache, embedder, FfmpegSampler(sampling), identity)
    assert (run.embedded, run.failed) == (2, 1)
    data = cache.gather(identity, run.records)
    assert data.X.shape == (8, embedder.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(data.X, axis=1), 1.0, rtol=1e-5)
