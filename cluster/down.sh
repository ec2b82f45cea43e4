#!/usr/bin/env bash
# Stops the local cluster started by up.sh (the node first, see node-down.sh, then the API
# server and etcd) and removes its tmpfs etcd data. Idempotent.
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

bash "$CLUSTER_DIR/node-down.sh"
stop_pid kube-apiserver
stop_pid etcd

rm -rf "$(etcd_data_dir)"
rm -f "$CLUSTER_JSON" "$RUN/mode"   # ports.env stays: the next up reuses the same ports when free
if [[ -n $purge ]]; then
  rm -rf "$CLUSTER_STATE"
  log "purged $CLUSTER_STATE"
else
  log "stopped (state kept in $CLUSTER_STATE)"
fi
