"""``make bench``'s report: GPU figures recorded in the repository survive a run on a machine without a GPU."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.report import RECORDED_GPU_DIR, render


def test_a_report_without_gpu_results_shows_the_recorded_gpu_runs(tmp_path: Path) -> None:
    recorded = sorted(RECORDED_GPU_DIR.glob("gpu-*.json"))
    assert recorded, "the GPU runs are kept in benchmarks/results/"
    text = render(tmp_path)  # an empty cache: nothing measured in this run
    for path in recorded:
        run = json.loads(path.read_text(encoding="utf-8"))
        assert f"### {run['machine']['gpu']}: {run['started_at']}" in text
        assert f"`benchmarks/results/{path.name}`" in text
        for row in run["tower"]:
            if "frames_per_second" in row:
                assert f"| {row['model']} | {row['config']} | {row['batch']} | {row['frames_per_second']:.1f} |" in text
    assert "### What the GPU figures say" in text
