#!/usr/bin/env bash
# Stops the local control plane started by up.sh and removes its tmpfs etcd data. Idempotent.
# Certificates and the kubeconfig path are kept so the next `up` hands out the same CA;
# `down.sh --purge` removes the whole instance state directory as well.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=''
[[ ${1:-} == --purge ]] && purge=1

if [[ ! -d $CLUSTER_STATE ]]; then
  log "nothing to stop ($CLUSTER_STATE does not exist)"
  exit 0
fi
mkdir -p "$RUN"
exec 9>"$CLUSTER_STATE/.lock"
flock 9

stop() { # $1 = name
  local pid
  if pid="$(pid_of "$1")"; then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    pid_of "$1" >/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$1.pid"
}
stop kube-apiserver
stop etcd

rm -rf "$(etcd_data_dir)"
rm -f "$CLUSTER_JSON"   # ports.env stays: the next up reuses the same ports when free
if [[ -n $purge ]]; then
  rm -rf "$CLUSTER_STATE"
  log "purged $CLUSTER_STATE"
else
  log "stopped (state kept in $CLUSTER_STATE)"
fi
