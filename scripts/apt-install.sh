#!/usr/bin/env bash
# Install Debian/Ubuntu packages for the project's set-up scripts: apt-get, through sudo when
# not root, quietly. Fails with a clear message where there is no apt-get.
#
#   bash scripts/apt-install.sh WHO PACKAGE...      (WHO prefixes the messages, e.g. "setup")
set -euo pipefail

who="$1"
shift
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$who: missing $* and no apt-get here; install them with your package manager" >&2
    exit 1
fi
sudo=""
[[ "$(id -u)" == "0" ]] || sudo="sudo"
echo "$who: installing $* from the OS packages" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
