#!/usr/bin/env bash
# Starts (or reuses) the local cluster: etcd + kube-apiserver on loopback, RBAC on, and with
# VMSNAP_CLUSTER_NODE=1 (the default) a real single node as well: containerd + runc, a kubelet,
# kube-scheduler and kube-controller-manager (node-up.sh). VMSNAP_CLUSTER_NODE=0 runs the API
# server alone (no controllers, no pods), which starts in seconds; the process-level tests use it.
# VMSNAP_NODE_NAME names the node (default vmsnap-node).
#
# stdout is meant for `eval "$(npm run -s cluster:up)"`: comment lines, an optional PATH export,
# and as the very last line `export KUBECONFIG=<path>`. Progress and errors go to stderr.
# Machine-readable result: $VMSNAP_CLUSTER_STATE/cluster.json (see lib.sh for the variables).
#
# Idempotent: if the recorded processes are alive, answer their health checks and run in the
# requested mode, nothing is started.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$CLUSTER_DIR/node-lib.sh"

mkdir -p "$CLUSTER_STATE" "$CERTS" "$LOGS" "$RUN"
chmod 700 "$CLUSTER_STATE"

# One up/down at a time per instance (parallel jest workers call this concurrently). The
# daemons are started with fd 9 closed so they never hold the lock.
exec 9>"$CLUSTER_STATE/.lock"
flock 9

print_result() {
  local bin_dir kubeconfig node
  bin_dir="$(sed -n 's/^ *"binDir": "\(.*\)",\{0,1\}$/\1/p' "$CLUSTER_JSON")"
  kubeconfig="$(sed -n 's/^ *"kubeconfig": "\(.*\)",\{0,1\}$/\1/p' "$CLUSTER_JSON")"
  echo "# vmsnap local control plane: $(sed -n 's/^ *"server": "\(.*\)",\{0,1\}$/\1/p' "$CLUSTER_JSON") (state: $CLUSTER_STATE)"
  echo "# kubectl and helm: $bin_dir"
  node="$(sed -n 's/^ *"nodeName": "\(.*\)",$/\1/p' "$CLUSTER_JSON")"
  [[ -n $node ]] && echo "# node: $node (load images: $CLUSTER_DIR/images.sh load <oci-archive>)"
  echo "export PATH=\"$bin_dir:\$PATH\""
  echo "export KUBECONFIG=$kubeconfig"
}

readyz() { # $1 = kubectl
  "$1" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=3s get --raw /readyz >/dev/null 2>&1
}

case "${VMSNAP_CLUSTER_NODE:-1}" in
  1) MODE=node ;; 0) MODE=plain ;;
  *) die "VMSNAP_CLUSTER_NODE must be 1 (run a node) or 0 (API server only), not '$VMSNAP_CLUSTER_NODE'" ;;
esac
NODE_NAME="${VMSNAP_NODE_NAME:-vmsnap-node}"
# The mode the running API server was started in (its flags differ); empty when none runs. One
# running without a record predates node support: it runs without a node.
RUNNING_MODE="$(cat "$RUN/mode" 2>/dev/null || true)"
[[ -z $RUNNING_MODE ]] && pid_of kube-apiserver >/dev/null && RUNNING_MODE=plain
# The node's Service range (node-lib.sh) sits in a documentation range with a local `prohibit`
# route; an instance without a node keeps the range it always had.
[[ $MODE == node ]] || SERVICE_CIDR=10.0.0.0/24

# ---- fast path: healthy control plane already running in this mode -----------------------
reuse=''
if [[ -f $CLUSTER_JSON && $RUNNING_MODE == "$MODE" ]] && pid_of etcd >/dev/null && pid_of kube-apiserver >/dev/null; then
  kubectl_bin="$(sed -n 's/^ *"kubectl": "\(.*\)",\{0,1\}$/\1/p' "$CLUSTER_JSON")"
  if [[ -x $kubectl_bin ]] && readyz "$kubectl_bin"; then
    log "reusing running control plane (apiserver pid $(pid_of kube-apiserver))"
    if [[ $MODE == plain ]]; then print_result; exit 0; fi
    reuse=1
  fi
fi

# ---- binaries -----------------------------------------------------------------------------
K8S_BIN_DIR="$(bash "$CLUSTER_DIR/build-k8s.sh" | tail -n1)"
APISERVER="$K8S_BIN_DIR/kube-apiserver"
ETCD="$(bash "$CLUSTER_DIR/ensure-etcd.sh" | tail -n1)"
BIN_DIR="$(bash "$CLUSTER_DIR/ensure-tools.sh" | tail -n1)"
KUBECTL="$BIN_DIR/kubectl"
HELM="$BIN_DIR/helm"
K8S_VERSION="$(basename "$(dirname "$APISERVER")")"

# ---- certificates (created once per instance, so kubeconfigs and tokens survive restarts) --
gen_certs() {
  local d=$CERTS
  log "generating CA, serving and admin certificates in $d"
  ( umask 077
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key"
    openssl req -x509 -new -key "$d/ca.key" -sha256 -days 3650 -subj "/CN=vmsnap-local-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$d/ca.crt"

    openssl ecparam -name prime256v1 -genkey -noout -out "$d/apiserver.key"
    openssl req -new -key "$d/apiserver.key" -subj "/CN=kube-apiserver" -out "$d/apiserver.csr"
    printf '%s\n' \
      "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
      > "$d/apiserver.ext"
    openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -sha256 -days 3650 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null

    openssl ecparam -name prime256v1 -genkey -noout -out "$d/admin.key"
    openssl req -new -key "$d/admin.key" -subj "/O=system:masters/CN=vmsnap-admin" -out "$d/admin.csr"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=clientAuth" > "$d/admin.ext"
    openssl x509 -req -in "$d/admin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -sha256 -days 3650 -extfile "$d/admin.ext" -out "$d/admin.crt" 2>/dev/null

    # ServiceAccount token signing key (RS256, what every client expects).
    openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
    openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
    rm -f "$d"/*.csr "$d"/*.ext "$d"/*.srl
  ) >&2
  touch "$d/.complete"
}
[[ -f $CERTS/.complete ]] || gen_certs

# Ports from the previous run are reused when still free, so the server URL stays stable.
ETCD_CLIENT_PORT='' ETCD_PEER_PORT='' APISERVER_PORT=''
[[ -f $RUN/ports.env ]] && source "$RUN/ports.env"

save_ports() {
  printf 'ETCD_CLIENT_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' \
    "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" > "$RUN/ports.env"
}

ETCD_DATA="$(etcd_data_dir)"
etcd_healthy() { pid_of etcd >/dev/null && [[ -n $ETCD_CLIENT_PORT ]] && http_get_ok "$ETCD_CLIENT_PORT" /health; }

# ---- etcd and kube-apiserver (skipped when reused above; the block is not indented) ---------
if [[ -z $reuse ]]; then

# Switching between node and no node changes the Service range, which the stored `kubernetes`
# Service must match: the instance starts over from an empty store.
if [[ -n $RUNNING_MODE && $RUNNING_MODE != "$MODE" ]]; then
  log "switching this instance to mode '$MODE' (VMSNAP_CLUSTER_NODE): restarting it empty"
  bash "$CLUSTER_DIR/node-down.sh"
  stop_pid kube-apiserver
  stop_pid etcd
  rm -rf "$ETCD_DATA"
fi

if ! etcd_healthy; then
  stop_pid kube-apiserver   # it would be talking to the etcd we are about to replace
  stop_pid etcd
  for attempt in 1 2 3; do
    [[ -n $ETCD_CLIENT_PORT ]] && port_free "$ETCD_CLIENT_PORT" || ETCD_CLIENT_PORT="$(free_port)"
    [[ -n $ETCD_PEER_PORT && $ETCD_PEER_PORT != "$ETCD_CLIENT_PORT" ]] && port_free "$ETCD_PEER_PORT" || ETCD_PEER_PORT="$(free_port)"
    mkdir -p "$ETCD_DATA" && chmod 700 "$ETCD_DATA"
    log "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT (data: $ETCD_DATA)"
    launch etcd "$ETCD" \
      --name=vmsnap \
      --data-dir="$ETCD_DATA" \
      --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
      --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster="vmsnap=http://127.0.0.1:$ETCD_PEER_PORT" \
      --logger=zap --log-outputs=stderr
    ok=''
    for _ in $(seq 1 300); do
      if http_get_ok "$ETCD_CLIENT_PORT" /health; then ok=1; break; fi
      pid_of etcd >/dev/null || break
      sleep 0.1
    done
    [[ -n $ok ]] && break
    stop_pid etcd
    if grep -q 'address already in use' "$LOGS/etcd.log"; then
      ETCD_CLIENT_PORT='' ETCD_PEER_PORT=''; continue
    fi
    tail -n 20 "$LOGS/etcd.log" >&2
    die "etcd did not become healthy (log: $LOGS/etcd.log)"
  done
  [[ -n $ok ]] || die "etcd could not get a free port (log: $LOGS/etcd.log)"
  save_ports
fi

# ---- kube-apiserver ----
# --endpoint-reconciler-type=none: the `kubernetes` Service cannot have a 127.0.0.1 endpoint
# (loopback is invalid there) and nothing in-cluster needs it; otherwise the apiserver logs an
# error about it forever.---------------------------------------------------------------------
write_kubeconfig() {
  local tmp="$KUBECONFIG_PATH.tmp.$$"
  ( umask 077
    cat > "$tmp" <<KC
apiVersion: v1
kind: Config
clusters:
- name: vmsnap-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 < "$CERTS/ca.crt")
users:
- name: vmsnap-admin
  user:
    client-certificate-data: $(base64 -w0 < "$CERTS/admin.crt")
    client-key-data: $(base64 -w0 < "$CERTS/admin.key")
contexts:
- name: vmsnap-local
  context:
    cluster: vmsnap-local
    user: vmsnap-admin
current-context: vmsnap-local
KC
  )
  mv -f "$tmp" "$KUBECONFIG_PATH"
}

# A node instance authorizes kubelets by node identity, admits ServiceAccounts (the
# controller-manager creates them), and reaches the kubelet by its InternalIP (the node IP on
# `lo`, node-lib.sh) with a client certificate the kubelet's webhook authorization accepts; no
# host name is looked up.
if [[ $MODE == node ]]; then
  bash "$CLUSTER_DIR/node-certs.sh" "$NODE_NAME" "$SERVICE_IP" "$NODE_IP"
  MODE_FLAGS=(
    --authorization-mode=Node,RBAC
    --enable-admission-plugins=NodeRestriction
    --kubelet-preferred-address-types=InternalIP
    --kubelet-client-certificate="$CERTS/apiserver-kubelet-client.crt"
    --kubelet-client-key="$CERTS/apiserver-kubelet-client.key"
    --kubelet-certificate-authority="$CERTS/ca.crt"
  )
else
  MODE_FLAGS=(--authorization-mode=RBAC --disable-admission-plugins=ServiceAccount)
fi

stop_pid kube-apiserver
rm -f "$RUN/mode"
ok=''
for attempt in 1 2 3; do
  [[ -n $APISERVER_PORT ]] && port_free "$APISERVER_PORT" || APISERVER_PORT="$(free_port)"
  write_kubeconfig
  log "starting kube-apiserver $K8S_VERSION on https://127.0.0.1:$APISERVER_PORT"
  launch kube-apiserver "$APISERVER" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --cert-dir="$CERTS" \
    --tls-cert-file="$CERTS/apiserver.crt" \
    --tls-private-key-file="$CERTS/apiserver.key" \
    --client-ca-file="$CERTS/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$CERTS/sa.pub" \
    --service-account-signing-key-file="$CERTS/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    "${MODE_FLAGS[@]}" \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --profiling=false
  for _ in $(seq 1 240); do   # up to ~2 min: first start on a slow machine bootstraps RBAC etc.
    if readyz "$KUBECTL"; then ok=1; break; fi
    pid_of kube-apiserver >/dev/null || break
    sleep 0.5
  done
  [[ -n $ok ]] && break
  stop_pid kube-apiserver
  if grep -q 'address already in use' "$LOGS/kube-apiserver.log"; then APISERVER_PORT=''; continue; fi
  tail -n 30 "$LOGS/kube-apiserver.log" >&2
  die "kube-apiserver did not become ready (log: $LOGS/kube-apiserver.log)"
done
[[ -n $ok ]] || die "kube-apiserver could not get a free port (log: $LOGS/kube-apiserver.log)"
echo "$MODE" > "$RUN/mode"

save_ports

# The apiserver's own bootstrap creates `default` shortly after /readyz; without a
# controller-manager nothing else would, so make sure it exists before anyone applies into it.
if ! "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" get namespace default >/dev/null 2>&1; then
  "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" create namespace default >/dev/null 2>&1 \
    || "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" get namespace default >/dev/null \
    || die "could not create namespace default"
fi

fi # [[ -z $reuse ]]

# ---- the node ------------------------------------------------------------------------------
NODE_JSON=null
if [[ $MODE == node ]]; then
  K8S_BIN_DIR="$K8S_BIN_DIR" KUBECTL="$KUBECTL" APISERVER_PORT="$APISERVER_PORT" NODE_NAME="$NODE_NAME" \
    bash "$CLUSTER_DIR/node-up.sh"
  NODE_JSON="$(cat "$RUN/node.json")"
fi
node_field() { if [[ $MODE == node ]]; then json_str "$(jq -r ".$1" "$RUN/node.json")"; else echo null; fi; }
# How other scripts get an image onto the node: build an OCI archive, then `images.sh load` it.
IMAGES_JSON=null
if [[ $MODE == node ]]; then
  IMAGES_JSON="{ \"load\": $(json_str "$CLUSTER_DIR/images.sh load"), \"containerdNamespace\": \"k8s.io\", \"snapshotter\": \"overlayfs\", \"sandboxImage\": $(node_field sandboxImage), \"pullPolicy\": \"Never\" }"
fi

# ---- machine-readable result ----------------------------------------------------------------
SERVER="https://127.0.0.1:$APISERVER_PORT"
tmp="$CLUSTER_JSON.tmp.$$"
cat > "$tmp" <<JSON
{
  "kubeconfig": $(json_str "$KUBECONFIG_PATH"),
  "server": $(json_str "$SERVER"),
  "kubectl": $(json_str "$KUBECTL"),
  "helm": $(json_str "$HELM"),
  "binDir": $(json_str "$BIN_DIR"),
  "stateDir": $(json_str "$CLUSTER_STATE"),
  "caFile": $(json_str "$CERTS/ca.crt"),
  "serviceAccountIssuer": "https://kubernetes.default.svc.cluster.local",
  "kubernetesVersion": $(json_str "$K8S_VERSION"),
  "apiserver": { "pid": $(pid_of kube-apiserver), "binary": $(json_str "$APISERVER"), "log": $(json_str "$LOGS/kube-apiserver.log") },
  "etcd": { "pid": $(pid_of etcd), "binary": $(json_str "$ETCD"), "endpoint": "http://127.0.0.1:$ETCD_CLIENT_PORT", "dataDir": $(json_str "$ETCD_DATA"), "log": $(json_str "$LOGS/etcd.log") },
  "serviceClusterIPRange": $(json_str "$SERVICE_CIDR"),
  "nodeName": $(node_field name),
  "containerdSocket": $(node_field containerdSocket),
  "kubeletRootDir": $(node_field kubeletRootDir),
  "images": $IMAGES_JSON,
  "node": $NODE_JSON
}
JSON
mv -f "$tmp" "$CLUSTER_JSON"
log "ready"
print_result
