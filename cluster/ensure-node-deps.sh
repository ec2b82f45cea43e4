#!/usr/bin/env bash
# Installs what the local node needs from Debian, once: containerd (with ctr), runc, buildah,
# the CNI plugins (/usr/lib/cni), iproute2 and a static C toolchain for the pause image.
# Quiet and instant when everything is in place. The Kubernetes binaries come from build-k8s.sh.
#
# containerd's package enables a system service; the stack never uses it (it runs its own
# containerd with its own config and socket), so the service is stopped and disabled again
# right after a fresh install to keep a second daemon from running for nothing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

missing=()
command -v containerd >/dev/null && command -v ctr >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
command -v buildah >/dev/null || missing+=(buildah)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
command -v ip >/dev/null && command -v ss >/dev/null || missing+=(iproute2)
command -v gcc >/dev/null || missing+=(gcc)
[[ -f /usr/lib/x86_64-linux-gnu/libc.a || -f /usr/lib/aarch64-linux-gnu/libc.a ]] || missing+=(libc6-dev)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)

(( ${#missing[@]} )) || exit 0
log "installing node prerequisites: ${missing[*]}"
apt_install "${missing[@]}"
if [[ " ${missing[*]} " == *" containerd "* ]] && command -v systemctl >/dev/null; then
  as_root systemctl disable --now containerd >/dev/null 2>&1 || true
fi
