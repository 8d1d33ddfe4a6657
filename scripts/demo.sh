#!/usr/bin/env bash
# The main job on a fresh machine: a local Apache Kafka, the MotionGuard worker,
# sample uploads (and bad ones), verdicts printed as they arrive, then the moderator review
# console with the demo's videos in its queue. In a terminal the demo keeps running until
# Ctrl-C; without one (CI, a pipe) it stops everything as soon as the console has answered.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
MG=.venv/bin/motionguard
OUT="$PWD/demo-out"
rm -rf "$OUT/kafka" "$OUT/worker" "$OUT/review"
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
CONSOLE_PID=""
cleanup() {
    echo "== stopping"
    if [[ -n "$CONSOLE_PID" ]] && kill -0 "$CONSOLE_PID" 2>/dev/null; then
        kill -TERM "$CONSOLE_PID" && wait "$CONSOLE_PID" || true
    fi
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

echo "== starting the moderator review console (every scored demo video is in its queue: audit fraction 1.0)"
CONSOLE_PORT=$(free_port)
export MOTIONGUARD_REVIEW_HOST=127.0.0.1
export MOTIONGUARD_REVIEW_PORT="$CONSOLE_PORT"
export MOTIONGUARD_REVIEW_METRICS_PORT="$(free_port)"
export MOTIONGUARD_REVIEW_USERS_FILE="$OUT/review/users"
export MOTIONGUARD_REVIEW_SESSION_SECRET="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(48))')"
export MOTIONGUARD_REVIEW_COOKIE_SECURE=false  # plain http on 127.0.0.1, for this demo only
export MOTIONGUARD_REVIEW_AUDIT_FRACTION=1.0   # production: a small fraction such as 0.01
DEMO_PASSWORD="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(12))')"
mkdir -p "$OUT/review"
printf '%s\n' "$DEMO_PASSWORD" | "$MG" review add-user demo --role moderator --password-stdin >/dev/null
"$MG" --log-level info review >"$OUT/review.log" 2>&1 &
CONSOLE_PID=$!
"$PY" - "$MOTIONGUARD_REVIEW_METRICS_PORT" "$CONSOLE_PID" <<'PYEOF'
import sys, time, urllib.request, os
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the review console exited; see demo-out/review.log")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.3)
sys.exit("the review console did not become ready; see demo-out/review.log")
PYEOF
echo "== review console: http://127.0.0.1:${CONSOLE_PORT}/"
echo "   demo user: demo   password: ${DEMO_PASSWORD}   (a moderator; made for this demo only, in $OUT/review/users)"
"$PY" -c '
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
for line in body.splitlines():
    if line.startswith("motionguard_review_items{") and not line.endswith(" 0.0"):
        print("   " + line)
' "$MOTIONGUARD_REVIEW_METRICS_PORT"
if [[ -t 0 ]]; then
    echo "== Kafka, the worker and the console keep running; press Ctrl-C to stop them"
    wait "$CONSOLE_PID" || true
else
    echo "== not a terminal: stopping now (run make demo in a terminal to keep the console open)"
fi
