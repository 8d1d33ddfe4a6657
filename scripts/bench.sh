#!/usr/bin/env bash
# `make bench`: build the synthetic corpus (once; cached in .cache/bench/corpus), run every
# benchmark, write BENCHMARKS.md.  A benchmark, not a test: it fails only when something
# cannot run, never because a figure misses its target (BENCHMARKS.md says which do).
#
#   bash scripts/bench.sh            # the full run: about 20-25 minutes on a 2-core machine
#                                    # (plus about 5 minutes the first time, to encode the corpus)
#   bash scripts/bench.sh --quick    # every section, smaller: about 8 minutes
#
# Needs the `bench` extra (PyAV, for the naive baseline), Java (the local Kafka) and ffmpeg; builds the
# lean static ffmpeg of scripts/build-ffmpeg.sh once (apt-get, about 5 minutes) for its rows in sections 1-2.
# On a machine with a GPU, the GPU section runs on it; otherwise the GPU script runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
QUICK=()
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=(--quick) ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg (use --quick or nothing)" >&2; exit 3 ;;
    esac
done

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore  # open_clip warns that the weights are random: we know
if ! "$PY" -c 'import av' 2>/dev/null; then
    echo "PyAV is missing (the naive baseline needs it): .venv/bin/pip install -e '.[bench]'" >&2
    exit 3
fi

RESULTS=.cache/bench/results
mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json  # the report never mixes two runs

step() { echo "== $* ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"; }

"$PY" -m benchmarks.report --mark start "${QUICK[@]}"
step "corpus (cached after the first run)"
"$PY" -m benchmarks.corpus "${QUICK[@]}"
step "lean static ffmpeg for the sampler (built once; cached in .cache/ffmpeg-lean)"
bash scripts/build-ffmpeg.sh >/dev/null ||
    echo "the lean ffmpeg could not be built: its rows are left out of sections 1 and 2" >&2
step "1/5 sampling cost versus video length"
"$PY" -m benchmarks.bench_sampling "${QUICK[@]}"
step "2/5 scan throughput: motionguard scan, naive pipeline, floor"
"$PY" -m benchmarks.bench_scan "${QUICK[@]}"
step "3/5 worker under load on a local Kafka"
"$PY" -m benchmarks.bench_worker "${QUICK[@]}"
step "4/5 GPU benchmark (on the CPU when there is no GPU)"
"$PY" -m benchmarks.gpu_bench "${QUICK[@]}"
step "5/5 broker failover on a three-node local Kafka"
"$PY" -m benchmarks.bench_failover "${QUICK[@]}"
"$PY" -m benchmarks.report --mark end
"$PY" -m benchmarks.report --out BENCHMARKS.md
step "done: BENCHMARKS.md"
