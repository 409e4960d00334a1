#!/usr/bin/env bash
# Build the bmex-wf image with buildah (no Docker engine needed) and smoke-test it.
#
#   bash scripts/build-container.sh [TAG]
#
# - Installs buildah and debootstrap from Debian when missing (needs root).
# - Makes a local debian:bookworm-slim base with debootstrap (no registry pull).
# - Builds with --isolation chroot --storage-driver vfs from a clean `git archive` of HEAD,
#   adding the host CA bundle ($PIP_CERT) and a local torch wheel from $PIP_FIND_LINKS when
#   present, so the build works behind a TLS-intercepting proxy.
# - Runs `bmex-wf --version` and `bmex-wf models` inside the image (buildah run).
# Environment: BUILD_ROOT (scratch space, default a temp dir), DEBIAN_MIRROR,
# TORCH_VERSION (default 2.13.0), KEEP=1 keeps the scratch space.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-localhost/bmex-wf:latest}
BASE=docker.io/library/debian:bookworm-slim
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
BUILD_ROOT=${BUILD_ROOT:-$(mktemp -d)}
STORAGE=(--storage-driver vfs)
start=$(date +%s)
log() { echo "[build-container $(($(date +%s) - start))s] $*"; }
cleanup() { [[ "${KEEP:-0}" == 1 ]] || rm -rf "$BUILD_ROOT/context" "$BUILD_ROOT/rootfs"; }
trap cleanup EXIT

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing buildah and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null
fi

# 1. Local base image (debootstrap'd bookworm, trimmed like the -slim image).
if ! buildah "${STORAGE[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
    log "debootstrap bookworm into $BUILD_ROOT/rootfs"
    rm -rf "$BUILD_ROOT/rootfs"
    debootstrap --variant=minbase bookworm "$BUILD_ROOT/rootfs" "$DEBIAN_MIRROR" >/dev/null
    rm -rf "$BUILD_ROOT"/rootfs/var/cache/apt/archives/*.deb "$BUILD_ROOT"/rootfs/var/lib/apt/lists/* \
        "$BUILD_ROOT"/rootfs/usr/share/doc/* "$BUILD_ROOT"/rootfs/usr/share/man/*
    echo "deb $DEBIAN_MIRROR bookworm main" >"$BUILD_ROOT/rootfs/etc/apt/sources.list"
    ctr=$(buildah "${STORAGE[@]}" from scratch)
    mnt=$(buildah "${STORAGE[@]}" mount "$ctr")
    cp -a "$BUILD_ROOT/rootfs/." "$mnt/"
    buildah "${STORAGE[@]}" umount "$ctr" >/dev/null
    buildah "${STORAGE[@]}" config --cmd /bin/bash "$ctr"
    buildah "${STORAGE[@]}" commit -q "$ctr" "$BASE" >/dev/null
    buildah "${STORAGE[@]}" rm "$ctr" >/dev/null
    log "base image $BASE ready"
fi

# 2. Clean build context: committed sources, plus CA bundle and local torch wheel if any.
rm -rf "$BUILD_ROOT/context" && mkdir -p "$BUILD_ROOT/context"
git archive HEAD | tar -x -C "$BUILD_ROOT/context"
args=(--build-arg "TORCH_VERSION=$TORCH_VERSION")
if [[ -n "${PIP_CERT:-}" && -f "$PIP_CERT" ]]; then
    mkdir -p "$BUILD_ROOT/context/certs" && cp "$PIP_CERT" "$BUILD_ROOT/context/certs/ca.pem"
    args+=(--build-arg PIP_CERT=certs/ca.pem)
fi
[[ -n "${PIP_INDEX_URL:-}" ]] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
wheel=$(ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-"$TORCH_VERSION"*cp311*.whl 2>/dev/null | head -n1 || true)
if [[ -n "$wheel" ]]; then
    mkdir -p "$BUILD_ROOT/context/wheels" && cp "$wheel" "$BUILD_ROOT/context/wheels/"
    args+=(--build-arg PIP_FIND_LINKS=wheels --build-arg TORCH_INDEX_URL=https://pypi.org/simple)
    log "using local wheel $(basename "$wheel")"
fi

# 3. Build and smoke-test.
log "building $TAG"
buildah "${STORAGE[@]}" build --isolation chroot --pull=never --layers=false \
    "${args[@]}" -t "$TAG" -f Dockerfile "$BUILD_ROOT/context"
log "built $TAG"
ctr=$(buildah "${STORAGE[@]}" from --pull=never "$TAG")
trap 'buildah "${STORAGE[@]}" rm "$ctr" >/dev/null; cleanup' EXIT
buildah "${STORAGE[@]}" run --isolation chroot "$ctr" -- bmex-wf --version
buildah "${STORAGE[@]}" run --isolation chroot "$ctr" -- bmex-wf models
buildah "${STORAGE[@]}" run --isolation chroot "$ctr" -- python3 -c \
    "import bmex_wf.bids.inputs, bmex_wf.workflows.participant, bmex_wf.interfaces.bids"
buildah "${STORAGE[@]}" run --isolation chroot "$ctr" -- id -un | grep -qx bmex
log "done: $TAG (bmex-wf --version and bmex-wf models ran inside the image)"
