#!/usr/bin/env bash
# The main job, on a fresh machine: make sample videos and score them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MG=.venv/bin/motionguard
OUT=demo-out

echo "== making sample videos in $OUT/videos"
$PY scripts/make_sample_videos.py "$OUT/videos"

echo "== scanning them (no model weights ship with MotionGuard: this runs random weights)"
set +e
$MG scan --model clip-vit-b-32 --pretrained none "$OUT"/videos/*
status=$?
set -e
echo "== scan exit status: $status (2 = some inputs could not be scored, as expected for the bad files)"
