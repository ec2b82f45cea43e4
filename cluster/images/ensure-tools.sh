#!/usr/bin/env bash
# Installs what the image scripts run (Debian packages), once: buildah builds and stores the images,
# mmdebstrap makes the Debian root filesystem of the base images. Quiet when both are present.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# mmdebstrap's root mode and overlay mounts need root; a rootless build is not supported here.
[[ $(id -u) -eq 0 ]] || die "building images needs root (mmdebstrap, overlay mounts)"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
[[ ${#missing[@]} -eq 0 ]] && exit 0
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
  { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
