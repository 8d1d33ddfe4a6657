#!/usr/bin/env bash
# Install the operating-system tools MotionGuard needs, only where missing.
# Debian/Ubuntu (apt-get); runs apt-get through sudo when not root.
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
# Debian's Chromium: the review console's browser tests drive it with Playwright (no browser download).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [[ "${MOTIONGUARD_WITH_PROMETHEUS:-0}" == "1" ]]; then
    command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
fi

if ((${#need[@]} == 0)); then
    exit 0
fi

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" setup "${need[@]}"
