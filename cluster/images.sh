#!/usr/bin/env bash
# Image helpers for the local node (no registry is reachable, so images are built here and
# imported into the node's containerd).
#
# As a command:
#   cluster/images.sh load <oci-archive>...   import into the instance's containerd (k8s.io
#                                             namespace, unpacked for overlayfs); prints the names
#   cluster/images.sh list                    image names the node's containerd holds
# The instance is VMSNAP_CLUSTER_STATE (as for up.sh); VMSNAP_CONTAINERD_SOCKET overrides the
# socket, otherwise it is cluster.json's "containerdSocket".
#
# Sourced (by image build scripts), it provides:
#   images_buildah ARGS...        buildah on vmsnap's own storage: every builder shares one store
#                                 with one driver (vfs works on every filesystem here; mixing
#                                 drivers in one store is refused by buildah)
#   images_cache_dir              where finished OCI archives are cached ($VMSNAP_CACHE/images)
#   images_load SOCKET ARCHIVE    the import behind `load`
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGES_CACHE="$VMSNAP_CACHE/images"
IMAGES_BUILDAH_ROOT="$VMSNAP_CACHE/buildah/storage"
IMAGES_BUILDAH_RUNROOT="/run/vmsnap-buildah-$(id -u)"

images_cache_dir() { mkdir -p "$IMAGES_CACHE"; echo "$IMAGES_CACHE"; }

images_buildah() {
  mkdir -p "$IMAGES_BUILDAH_ROOT"
  BUILDAH_ISOLATION=chroot buildah --root "$IMAGES_BUILDAH_ROOT" --runroot "$IMAGES_BUILDAH_RUNROOT" \
    --storage-driver vfs "$@"
}

# The archive's image names come from its index annotations (buildah push ... oci-archive:F:NAME
# records NAME); ctr needs a full reference there, which `localhost/...:tag` names are.
images_load() { # $1 = containerd socket, $2 = OCI archive
  local sock=$1 archive=$2
  [[ -S $sock ]] || die "no containerd socket at $sock (is the node running? VMSNAP_CLUSTER_NODE=1 npm run cluster:up)"
  [[ -f $archive ]] || die "no such archive: $archive"
  ctr --address "$sock" -n k8s.io images import --snapshotter overlayfs "$archive" >&2 \
    || die "ctr images import $archive failed"
  tar -xOf "$archive" index.json | jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"] // empty'
}

images_socket() {
  if [[ -n ${VMSNAP_CONTAINERD_SOCKET:-} ]]; then echo "$VMSNAP_CONTAINERD_SOCKET"; return; fi
  [[ -f $CLUSTER_JSON ]] || die "no $CLUSTER_JSON: start the instance first (npm run cluster:up)"
  local s; s="$(jq -r '.containerdSocket // empty' "$CLUSTER_JSON")"
  [[ -n $s ]] || die "$CLUSTER_JSON has no containerdSocket: this instance runs without a node (VMSNAP_CLUSTER_NODE=0)"
  echo "$s"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  case "${1:-}" in
    load)
      shift; (( $# )) || die "usage: $0 load <oci-archive>..."
      sock="$(images_socket)"
      for a in "$@"; do images_load "$sock" "$a"; done ;;
    list)
      sock="$(images_socket)"
      ctr --address "$sock" -n k8s.io images ls -q | grep -v '^sha256:' || true ;;
    *) die "usage: $0 load <oci-archive>... | list" ;;
  esac
fi
