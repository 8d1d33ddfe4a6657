"""The CUDA path: autocast, pinned host memory and asynchronous copies give what the CPU gives.

These run only where a CUDA GPU is (CI has none; they are run on a GPU machine when one is
available: ``pytest tests/detectors/test_gpu.py``).  Random weights are seeded, so the CPU and
the GPU embedder hold the same model; they differ only in arithmetic (bf16 autocast on the GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.embedding import ClipEmbedder, EmbedderSpec
from detectors.sampling import FfmpegSampler, SamplingConfig
from tests.detectors.builders import prompt_detector
from tests.videofactory import VideoCache

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def embedders(model: str) -> tuple[ClipEmbedder, ClipEmbedder]:
    # batch_size 5 with 12 frames: the last chunk is partial, as in real use.
    cpu = ClipEmbedder(EmbedderSpec.from_names(model, "none", device="cpu", batch_size=5))
    gpu = ClipEmbedder(EmbedderSpec.from_names(model, "none", device="cuda", batch_size=5))
    return cpu, gpu


@pytest.mark.parametrize("model", ["tiny-test", "ViT-B-32"])
def test_gpu_embeddings_agree_with_the_cpu_ones(videos: VideoCache, model: str) -> None:
    cpu, gpu = embedders(model)
    assert gpu.device.type == "cuda"
    path = videos.video(seconds=2, width=320, height=240)
    frames = FfmpegSampler(SamplingConfig(frames=12)).sample(path, cpu.image_size, cpu.resize_mode).frames
    on_cpu, on_gpu = cpu.embed_frames(frames), gpu.embed_frames(frames)
    assert on_gpu.dtype == np.float32 and on_gpu.shape == on_cpu.shape == (12, cpu.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(on_gpu, axis=1), 1.0, atol=1e-4)
    cosine = np.sum(on_cpu * on_gpu, axis=1)
    assert cosine.min() > 0.99, cosine
    # The frames' similarities to one another (what the classifiers see) agree too.
    np.testing.assert_allclose(on_gpu @ on_gpu.T, on_cpu @ on_cpu.T, atol=0.02)

    texts = ["a video of a person walking", "a computer-generated video of a person dancing"]
    text_cosine = np.sum(cpu.embed_texts(texts) * gpu.embed_texts(texts), axis=1)
    assert text_cosine.min() > 0.99, text_cosine


def test_batched_scanning_on_the_gpu_scores_like_the_cpu(videos: VideoCache) -> None:
    cpu, gpu = embedders("tiny-test")
    paths = [
        videos.video(seconds=1, source=source, width=160, height=120)
        for source in ("testsrc2", "color=red", "color=blue", "smptebars", "mandelbrot")
    ]

    alone = [prompt_detector(cpu).scan(p) for p in paths]
    batched = list(prompt_detector(gpu).scan_many(paths, decode_workers=3, batch_videos=4))
    assert [r.source for r in batched] == [str(p) for p in paths]
    for one, many in zip(alone, batched, strict=True):
        assert one.score is not None and many.score is not None
        assert many.score.frames_scored == one.score.frames_scored
        assert many.score.score == pytest.approx(one.score.score, abs=0.05)


def test_nvdec_decoding_gives_the_cpu_frames_and_scores(videos: VideoCache) -> None:
    """``hw_decode="cuda"``: the same frames at the same times as the CPU decoder, and the same verdicts.

    Needs an ffmpeg with the cuda hwaccel and the driver's video capability (NVDEC)."""
    nvdec = FfmpegSampler(SamplingConfig(frames=8, hw_decode="cuda"))
    if nvdec.hw_decode != "cuda":
        pytest.skip("this host's ffmpeg cannot decode with NVDEC (see the warning logged)")
    cpu_sampler = FfmpegSampler(SamplingConfig(frames=8))
    path = videos.video(seconds=4, width=640, height=360, gop=25)
    on_cpu, on_gpu = cpu_sampler.sample(path, 224), nvdec.sample(path, 224)
    np.testing.assert_allclose(on_gpu.timestamps_seconds, on_cpu.timestamps_seconds, atol=1e-6)
    difference = np.abs(on_gpu.frames.astype(np.int16) - on_cpu.frames.astype(np.int16))
    assert difference.mean() < 1.0, difference.mean()  # bit-exact H.264 decoding; only colour conversion may differ

    cpu, _ = embedders("tiny-test")
    alone = prompt_detector(cpu).scan(path)
    on_nvdec = prompt_detector(cpu, sampler=nvdec).scan(path)
    assert alone.score is not None and on_nvdec.score is not None
    assert on_nvdec.score.verdict == alone.score.verdict
    assert on_nvdec.score.score == pytest.approx(alone.score.score, abs=1e-2)
