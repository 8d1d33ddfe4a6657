#!/usr/bin/env bash
# One short, prepared GPU run from the repository (a lent GPU machine has the project's Python
# packages but nothing built here): what the host offers, the CUDA tests, then decode + embed with
# CPU decoding and with NVDEC, each with the GPU's and NVDEC's utilisation.  Results under $OUT
# (default .cache/gpu-check): gpu-check.log, gpu.json (copy it to benchmarks/results/ and run
# `python -m benchmarks.report` to put it into BENCHMARKS.md).
#
#   OUT=/tmp/out bash scripts/gpu-check.sh [BUDGET_SECONDS]     # default budget 360 s
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-.cache/gpu-check}"
BUDGET="${1:-360}"
PY="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore
exec > >(tee "$OUT/gpu-check.log") 2>&1

echo "== host"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
ffmpeg -hide_banner -version | head -1 || { echo "no ffmpeg: the end-to-end part cannot run"; }
ffmpeg -hide_banner -hwaccels 2>/dev/null | tr '\n' ' '; echo
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
"$PY" - <<'PYEOF'
import logging
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from pathlib import Path
from detectors.sampling.hwdecode import check_cuda_decoding
print("NVDEC check, this host's ffmpeg:", check_cuda_decoding("ffmpeg"))
lean = Path(".cache/ffmpeg-lean-nvdec/bin/ffmpeg")
if lean.exists():
    print("NVDEC check, the lean --nvdec build:", check_cuda_decoding(str(lean)))
PYEOF

echo "== CUDA tests (CPU vs GPU embeddings, NVDEC vs CPU decoding)"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/detectors/test_gpu.py -rs

echo "== decode + embed, ViT-L/14, 8 frames, CPU decoding and NVDEC"
cores=$(nproc)
variants=default,nvdec
# The lean static builds travel with the working tree (run's `carry`: .cache/ffmpeg-lean and
# .cache/ffmpeg-lean-nvdec, built here by scripts/build-ffmpeg.sh [--nvdec]): a GPU host has no apt.
[[ -x .cache/ffmpeg-lean/bin/ffmpeg ]] && variants+=,lean
[[ -x .cache/ffmpeg-lean-nvdec/bin/ffmpeg ]] && variants+=,lean-nvdec
timeout $((BUDGET + 120)) "$PY" -m benchmarks.gpu_bench --device cuda --skip-tower --models ViT-L-14 \
    --e2e-sampling "$variants" --decode-workers "$cores" --videos 96 --budget-seconds "$BUDGET" \
    --cache-dir "$OUT/bench"
cp "$OUT"/bench/results/gpu.json "$OUT/gpu.json" 2>/dev/null && echo "results: $OUT/gpu.json"
