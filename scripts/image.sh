#!/usr/bin/env bash
# Build the MotionGuard worker image (deploy/Dockerfile) with Debian's podman and no registry:
# `make image`, or `bash scripts/image.sh [--print-tag]`.
#
#   1. podman, runc and debootstrap come from Debian's packages (apt-get, sudo when not root).
#   2. The base image is made from Debian's packages with debootstrap (bookworm, Python 3.11,
#      with bookworm-updates and bookworm-security in its sources) and imported as
#      localhost/motionguard-base:<recipe>; it is made once and reused while this recipe is
#      unchanged, so the image's own layers stay cached between builds.
#   3. `podman build` runs the unchanged Dockerfile with that base, PyPI's torch (the CPU wheel
#      index is not reachable here) and the host's CA bundle mounted read-only for pip: the
#      registries are reached through a TLS-inspecting proxy whose CA is in the host's bundle.
#      The bundle is the build secret "ca_bundle": mounted only into the RUN steps that call pip,
#      never part of a layer.
#
# Settings (environment):
#   MOTIONGUARD_VARIANT      cpu (default) or cuda (torch's CUDA wheels; runs on CPUs too)
#   MOTIONGUARD_IMAGE        tag to build (default motionguard:dev-<variant>)
#   MOTIONGUARD_BASE_MIRROR  Debian mirror for debootstrap (default: deb.debian.org)
#   MOTIONGUARD_TORCH_INDEX_URL  extra index for torch; empty (default) = PyPI only, "auto" = the
#                            variant's own (PyTorch's CPU index for cpu, which is smaller)
#   HOST_CA_BUNDLE           CA bundle pip should trust during the build (default: the system bundle)
#
# Podman runs with deploy/podman/containers.conf (runc, no default ulimits); see that file.
# Where a registry and Docker are at hand, the same Dockerfile builds with BuildKit directly:
# see "Container image" in docs/deployment.md.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
variant="${MOTIONGUARD_VARIANT:-cpu}"
image="${MOTIONGUARD_IMAGE:-motionguard:dev-$variant}"
torch_index="${MOTIONGUARD_TORCH_INDEX_URL:-}"
mirror="${MOTIONGUARD_BASE_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${mirror%/debian}/debian-security"
host_ca="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
export CONTAINERS_CONF="$repo/deploy/podman/containers.conf"

say() { echo "image: $*" >&2; }

if [[ "${1:-}" == "--print-tag" ]]; then
    echo "$image"
    exit 0
fi

# --- 1. tools ---------------------------------------------------------------------------------
need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if ((${#need[@]})); then
    bash "$repo/scripts/apt-install.sh" image "${need[@]}"
fi

# --- 2. the base image, from Debian's packages ----------------------------------------------------
# The recipe is everything that decides the base's contents; a change makes a new base.
# python3-distutils: python3.11-venv needs python3.11-distutils, a virtual package debootstrap cannot resolve.
packages="python3.11,python3.11-venv,python3-distutils,ca-certificates"
recipe="bookworm minbase $packages $mirror $security_mirror format=1"
base="localhost/motionguard-base:bookworm-py311-$(echo "$recipe" | sha256sum | cut -c1-12)"
if podman image exists "$base"; then
    say "base $base is present"
else
    started=$SECONDS
    rootfs="$(mktemp -d /var/tmp/motionguard-base.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    say "making the base image with debootstrap (bookworm, $packages) in $rootfs"
    debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
        tail -n 30 "$rootfs.log" >&2
        say "debootstrap failed (full log: $rootfs.log)"
        exit 1
    }
    rm -f "$rootfs.log"
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security_mirror bookworm-security main
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL org.opencontainers.image.title=motionguard-base" \
        --message "debootstrap bookworm minbase: $packages" \
        - "$base" >/dev/null
    say "base $base made in $((SECONDS - started)) s"
fi

# --- 3. the worker image ----------------------------------------------------------------------------
if [[ ! -r "$host_ca" ]]; then
    say "cannot read the CA bundle $host_ca (set HOST_CA_BUNDLE)"
    exit 1
fi
started=$SECONDS
say "building $image from deploy/Dockerfile (cached layers are reused)"
podman build \
    --format docker \
    --network host \
    --secret "id=ca_bundle,src=$host_ca" \
    --build-arg "VARIANT=$variant" \
    --build-arg "BASE_IMAGE=$base" \
    --build-arg "TORCH_INDEX_URL=$torch_index" \
    --file "$repo/deploy/Dockerfile" \
    --tag "$image" \
    "$repo"
# An earlier build of this tag is left untagged: remove it (the cached build layers stay).
podman image prune --force --filter label=org.opencontainers.image.title=motionguard >/dev/null || true
say "built $image in $((SECONDS - started)) s; size $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1/1e9}')"
