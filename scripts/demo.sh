#!/usr/bin/env bash
# The main job on a fresh machine: a local Apache Kafka, the MotionGuard worker,
# sample uploads (and bad ones), verdicts printed as they arrive, then a clean stop.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MG=.venv/bin/motionguard
OUT="$PWD/demo-out"
rm -rf "$OUT/kafka" "$OUT/worker"
mkdir -p "$OUT"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(free_port)
WEB_PORT=$(free_port)
export MOTIONGUARD_BROKER="kafka://127.0.0.1:${KAFKA_PORT}"
export MOTIONGUARD_ALLOWED_ROOTS="$OUT/videos"
export MOTIONGUARD_WEB_PORT="$WEB_PORT"
export MOTIONGUARD_WEB_HOST=127.0.0.1
export MOTIONGUARD_DATA_DIR="$OUT/worker/faust"
export MOTIONGUARD_DOWNLOAD_DIR="$OUT/worker/downloads"
export MOTIONGUARD_APP_ID="motionguard-demo"

WORKER_PID=""
cleanup() {
    echo "== stopping"
    if [[ -n "$WORKER_PID" ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
        kill -TERM "$WORKER_PID" && wait "$WORKER_PID" || true
    fi
    "$MG" kafka stop --data-dir "$OUT/kafka" >/dev/null || true
}
trap cleanup EXIT

echo "== making sample videos in $OUT/videos"
"$PY" scripts/make_sample_videos.py "$OUT/videos"

echo "== starting Apache Kafka (KRaft, single node) on 127.0.0.1:${KAFKA_PORT}"
"$MG" kafka start --port "$KAFKA_PORT" --data-dir "$OUT/kafka"

echo "== starting the worker (ViT-B-32 with RANDOM weights: no model weights ship with MotionGuard)"
"$MG" --log-level info worker --model ViT-B-32 --pretrained none >"$OUT/worker.log" 2>&1 &
WORKER_PID=$!
"$PY" - "$WEB_PORT" "$WORKER_PID" <<'PYEOF'
import sys, time, urllib.request, os
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 180
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the worker exited; see demo-out/worker.log")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            if r.status == 200:
                print("   worker ready")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("the worker did not become ready; see demo-out/worker.log")
PYEOF

echo "== submitting uploads: 3 videos, one signed with a C2PA AI declaration, a text file, a truncated file, a file outside the allowed root, a malformed event"
"$MG" submit --video-id-prefix demo "$OUT"/videos/walk-h264.mp4 "$OUT"/videos/dance-vp9.webm "$OUT"/videos/wave.gif \
    "$OUT"/videos/signed-ai.mp4 "$OUT"/videos/notes.txt "$OUT"/videos/truncated.mp4 /etc/hostname >/dev/null
"$MG" submit --raw '{"video_id": "demo-malformed", "uri": 42}' >/dev/null

echo "== verdicts as they arrive (video_id, verdict, score, frames, then the error or the C2PA provenance)"
"$MG" verdicts --count 8 --idle-seconds 120 --table
echo "== dead-letter topic: $("$MG" verdicts --dead-letters --idle-seconds 3 | wc -l) records (one per failed upload)"
echo "== metrics are at http://127.0.0.1:${WEB_PORT}/metrics, for example:"
"$PY" -c '
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
for line in body.splitlines():
    if line.startswith(("motionguard_videos_processed_total", "motionguard_errors_total", "motionguard_model_info",
                        "motionguard_verdicts_decided_total")):
        print("   " + line)
' "$WEB_PORT"
echo "== every verdict above comes from an UNTRAINED model: verdicts are meaningless until real weights are used"
