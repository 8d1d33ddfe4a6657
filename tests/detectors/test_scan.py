"""``motionguard scan`` and the Detector on real files made with ffmpeg.

The model is a tiny random-initialised one: these tests are about the pipeline,
the schema and the error handling, not about accuracy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detectors.embedding import ClipEmbedder, EmbedderSpec
from detectors.pipeline import Detector, ModelInfo
from detectors.prompts import PromptClassifier
from detectors.sampling import FfmpegSampler, SamplingConfig
from detectors.types import AI_LABEL, REAL_LABEL
from detectors.voting import Policy
from tests.detectors.builders import prompt_detector
from tests.videofactory import VideoCache, make_empty_file, make_text_file, make_truncated_copy

REPO = Path(__file__).resolve().parents[2]
VERDICT_KEYS = {"source", "verdict", "score", "generator", "frames_scored", "segments", "model", "timings_ms", "error"}


def run_scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer", "scan", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def mixed_inputs(videos: VideoCache, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str | None]]:
    """name -> (path, expected error code or None for a good video)."""
    bad = tmp_path_factory.mktemp("bad")
    mp4 = videos.video(codec="h264", seconds=1, width=96, height=64)
    return {
        "mp4": (mp4, None),
        "webm": (videos.video(codec="vp9", seconds=1, width=64, height=96, source="mandelbrot"), None),
        "gif": (videos.video(codec="gif", seconds=1, width=64, height=64, fps=8), None),
        "empty": (make_empty_file(bad / "empty.mp4"), "empty_file"),
        "text": (make_text_file(bad / "notes.txt"), "not_a_video"),
        "truncated": (make_truncated_copy(mp4, bad / "truncated.mp4"), "corrupt_video"),
        "missing": (bad / "missing.mp4", "not_found"),
    }


def test_scan_json_scores_good_files_and_rejects_bad_ones(mixed_inputs: dict[str, tuple[Path, str | None]]) -> None:
    paths = [str(path) for path, _ in mixed_inputs.values()]
    result = run_scan("--model", "ViT-B-32", "--pretrained", "none", "--frames", "4", "--json", *paths)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert "untrained model: verdicts are meaningless" in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["source"] for line in lines] == paths  # one line per input, in order
    for line, (name, (_, code)) in zip(lines, mixed_inputs.items(), strict=True):
        assert set(line) >= VERDICT_KEYS, name
        assert line["model"]["untrained"] is True
        assert line["warnings"] == ["untrained model: verdicts are meaningless"]
        if code is None:
            assert line["error"] is None, (name, line["error"])
            assert line["verdict"] in ("ai_generated", "needs_review", "real")
            assert 0.0 <= line["score"] <= 1.0
            assert 1 <= line["frames_scored"] <= 4
            assert line["segments"] and line["timings_ms"]["total"] > 0
        else:
            assert line["verdict"] == "error", name
            assert line["error"]["code"] == code, (name, line["error"])
            assert line["error"]["message"]
            assert line["score"] is None and line["frames_scored"] == 0


def test_scan_exits_zero_when_everything_was_scored(mixed_inputs: dict[str, tuple[Path, str | None]]) -> None:
    good = [str(path) for path, code in mixed_inputs.values() if code is None]
    result = run_scan("--model", "tiny-test", "--pretrained", "none", "--json", *good)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(good)


def test_scan_decodes_with_the_ffmpeg_and_ffprobe_it_is_given(
    mixed_inputs: dict[str, tuple[Path, str | None]], tmp_path: Path
) -> None:
    # Wrappers that log each call and then run the real programs: scan must call these, not PATH's.
    calls = tmp_path / "calls.log"
    wrappers = {}
    for tool in ("ffmpeg", "ffprobe"):
        real = shutil.which(tool)
        assert real is not None
        wrapper = tmp_path / f"my-{tool}"
        wrapper.write_text(f'#!/bin/sh\necho {tool} >> "{calls}"\nexec "{real}" "$@"\n')
        wrapper.chmod(0o755)
        wrappers[tool] = str(wrapper)
    path = mixed_inputs["mp4"][0]
    done = run_scan(
        "--model",
        "ViT-B-32",
        "--pretrained",
        "none",
        "--frames",
        "4",
        "--json",
        "--ffmpeg",
        wrappers["ffmpeg"],
        "--ffprobe",
        wrappers["ffprobe"],
        str(path),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["error"] is None
    logged = calls.read_text().split()
    assert "ffmpeg" in logged and "ffprobe" in logged, logged


def test_scan_table_output(mixed_inputs: dict[str, tuple[Path, str | None]]) -> None:
    path, _ = mixed_inputs["mp4"]
    bad, _ = mixed_inputs["text"]
    result = run_scan("--model", "tiny-test", "--pretrained", "none", str(path), str(bad))
    assert result.returncode == 2
    assert "not_a_video" in result.stdout
    assert "1 scored, 1 failed" in result.stderr
    assert "untrained model" in result.stderr


def test_scan_with_an_unknown_model_is_a_clear_usage_error(tmp_path: Path) -> None:
    result = run_scan("--model", "ViT-Q-99", "--pretrained", "none", str(tmp_path / "x.mp4"))
    assert result.returncode == 3
    assert "unknown model 'ViT-Q-99'" in result.stderr
    assert "clip-vit-b-32" in result.stderr
    assert "Traceback" not in result.stderr


def test_scan_without_the_hub_says_how_to_proceed(tmp_path: Path) -> None:
    """These machines cannot reach the model hub: the error must say so, not fall back silently."""
    result = run_scan("--model", "tiny-test", "--pretrained", "openai", str(tmp_path / "x.mp4"))
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "no pretrained weights tagged 'openai'" in result.stderr


@pytest.fixture(scope="module")
def tiny_embedder() -> ClipEmbedder:
    return ClipEmbedder(EmbedderSpec.from_names("tiny-test", "none", device="cpu"))


def test_segments_show_a_video_whose_second_half_differs(videos: VideoCache, tiny_embedder: ClipEmbedder) -> None:
    """Red frames are 'real' and blue frames 'AI' for this classifier: the segments must show the switch."""
    sampler = FfmpegSampler(SamplingConfig(frames=8))
    red = sampler.sample(videos.video(seconds=1, source="color=red"), tiny_embedder.image_size)
    blue = sampler.sample(videos.video(seconds=1, source="color=blue"), tiny_embedder.image_size)
    classifier = PromptClassifier(logit_scale=1000.0).fit(
        np.concatenate([tiny_embedder.embed_frames(red.frames), tiny_embedder.embed_frames(blue.frames)]),
        np.array([REAL_LABEL] * len(red) + [AI_LABEL] * len(blue)),
    )
    detector = Detector(
        sampler=sampler,
        embedder=tiny_embedder,
        classifier=classifier,
        model=ModelInfo("test", "test@1", "prompt", tiny_embedder.describe(), untrained=True),
        policies={"default": Policy(segment_frames=2)},
    )
    half_and_half = videos.video(seconds=4, fps=25, source=("color=red", "color=blue"))
    result = detector.scan(half_and_half)
    assert result.ok and result.score is not None
    assert [segment.score for segment in result.score.segments] == [0.0, 0.0, 1.0, 1.0]
    assert result.score.segments[2].start_seconds >= 2.0 > result.score.segments[1].end_seconds
    # Every scored frame's real time is in the verdict.
    scored = [t for segment in result.to_dict()["segments"] for t in segment["frame_seconds"]]
    assert scored == [round(float(t), 3) for t in detector.sample(half_and_half).timestamps_seconds]
    assert result.score.vote_fraction == 0.5
    assert result.verdict == "needs_review"
    # The all-red video is real, the all-blue one generated.
    assert detector.scan(videos.video(seconds=1, source="color=red")).verdict == "real"
    assert detector.scan(videos.video(seconds=1, source="color=blue")).verdict == "ai_generated"


def test_scan_many_keeps_order_and_isolates_failures(
    mixed_inputs: dict[str, tuple[Path, str | None]], tiny_embedder: ClipEmbedder
) -> None:
    detector = prompt_detector(tiny_embedder)
    paths = [path for path, _ in mixed_inputs.values()]
    results = list(detector.scan_many(paths, prefetch=3))
    assert [r.source for r in results] == [str(p) for p in paths]
    assert [None if r.ok else r.error.code for r in results] == [code for _, code in mixed_inputs.values()]  # type: ignore[union-attr]


@pytest.mark.parametrize(("batch_videos", "decode_workers"), [(1, 1), (3, 1), (3, 3), (8, 2)])
def test_batched_multi_video_scanning_matches_one_video_at_a_time(
    mixed_inputs: dict[str, tuple[Path, str | None]],
    tiny_embedder: ClipEmbedder,
    batch_videos: int,
    decode_workers: int,
) -> None:
    """Frames of several videos in one model call, decoded by several workers, score as if alone."""
    detector = prompt_detector(tiny_embedder)
    paths = [path for path, _ in mixed_inputs.values()] * 2
    alone = [detector.scan(p) for p in paths]
    batched = list(detector.scan_many(paths, decode_workers=decode_workers, batch_videos=batch_videos))
    assert [r.source for r in batched] == [str(p) for p in paths]
    for one, many in zip(alone, batched, strict=True):
        assert (one.error.code if one.error else None) == (many.error.code if many.error else None)
        if one.score is not None:
            assert many.score is not None
            assert many.score.frames_scored == one.score.frames_scored
            assert many.score.score == pytest.approx(one.score.score, abs=1e-5)
            assert many.verdict == one.verdict


def test_scan_many_rejects_a_batch_of_no_videos(tiny_embedder: ClipEmbedder) -> None:
    detector = prompt_detector(tiny_embedder)
    with pytest.raises(ValueError, match="batch_videos"):
        list(detector.scan_many([], batch_videos=0))
