#!/usr/bin/env bash
# Starts (or reuses) the local node of an instance: containerd + runc with a CNI bridge, a
# kubelet, kube-scheduler and kube-controller-manager. Called by up.sh with the
# instance lock held, after the API server is ready; not meant to be run on its own.
#
# Everything listens on loopback: 127.0.0.1, and the kubelet's API on the node IP, an address of
# the `lo` interface (see node-lib.sh).
#
# Environment from up.sh: K8S_BIN_DIR, KUBECTL, APISERVER_PORT, NODE_NAME.
# Writes $RUN/node.json (merged into cluster.json by up.sh).
#
# Each daemon is reused when it runs, answers its health check and was started with the same
# configuration (a hash of its arguments and config files); otherwise it is restarted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$CLUSTER_DIR/node-lib.sh"
source "$CLUSTER_DIR/images.sh"
: "${K8S_BIN_DIR:?} ${KUBECTL:?} ${APISERVER_PORT:?} ${NODE_NAME:?}"

bash "$CLUSTER_DIR/ensure-node-deps.sh"
bash "$CLUSTER_DIR/node-certs.sh" "$NODE_NAME" "$SERVICE_IP" "$NODE_IP"
mkdir -p "$NODE_DIR" "$CONTAINERD_DIR" "$KUBELET_ROOT" "$CNI_CONF_DIR" "$NODE_DIR/pod-logs"
echo "$NODE_NAME" > "$NODE_NAME_FILE"

# ---- ports (kept across restarts when still free) ------------------------------------------
KUBELET_PORT='' KUBELET_HEALTHZ_PORT='' SCHEDULER_PORT='' CONTROLLER_MANAGER_PORT=''
[[ -f $RUN/node-ports.env ]] && source "$RUN/node-ports.env"
pick_port() { # $1 = variable name, $2 = daemon that owns it when running
  local v=${!1}
  if [[ -z $v ]] || { ! pid_of "$2" >/dev/null && ! port_free "$v"; }; then v="$(free_port)"; fi
  printf -v "$1" '%s' "$v"
}
pick_port KUBELET_PORT kubelet
pick_port KUBELET_HEALTHZ_PORT kubelet
pick_port SCHEDULER_PORT kube-scheduler
pick_port CONTROLLER_MANAGER_PORT kube-controller-manager
save_node_ports() {
  printf 'KUBELET_PORT=%s\nKUBELET_HEALTHZ_PORT=%s\nSCHEDULER_PORT=%s\nCONTROLLER_MANAGER_PORT=%s\n' \
    "$KUBELET_PORT" "$KUBELET_HEALTHZ_PORT" "$SCHEDULER_PORT" "$CONTROLLER_MANAGER_PORT" > "$RUN/node-ports.env"
}

# ---- helpers ---------------------------------------------------------------------------------
# Writes stdin to $1 only when the content changed (so config hashes stay stable).
write_if_changed() {
  local tmp="$1.tmp.$$"
  cat > "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}
# $1 = name; stdin = everything its configuration consists of.
config_hash_changed() {
  local h; h="$(sha256sum | cut -c1-32)"
  [[ -f $RUN/$1.cfg && $(cat "$RUN/$1.cfg") == "$h" ]] && return 1
  echo "$h" > "$RUN/$1.cfg.new"; return 0
}
commit_config_hash() { [[ -f $RUN/$1.cfg.new ]] && mv -f "$RUN/$1.cfg.new" "$RUN/$1.cfg"; return 0; }
https_healthz() { curl -skf --max-time 3 "https://127.0.0.1:$1/healthz" >/dev/null 2>&1; }
wait_for() { # $1 = name, $2 = seconds, rest = check command; fails when the daemon exits
  local name=$1 secs=$2; shift 2
  for _ in $(seq 1 $(( secs * 4 ))); do
    "$@" && return 0
    pid_of "$name" >/dev/null || return 1
    sleep 0.25
  done
  return 1
}
# Restarts $1 unless it runs healthy with the current configuration (stdin: its configuration),
# by `launch_via $1 <binary> <command...>`, then waits for the health check.
ensure_daemon() { # $1 = name, $2 = health check function, $3 = binary, rest = command
  local name=$1 health=$2; shift 2
  local changed=''
  { printf '%s\n' "$@"; cat; } | config_hash_changed "$name" && changed=1
  if [[ -z $changed ]] && pid_of "$name" >/dev/null && "$health"; then
    rm -f "$RUN/$name.cfg.new"; return 0
  fi
  stop_pid "$name"
  log "starting $name"
  launch_via "$name" "$@"
  wait_for "$name" 120 "$health" || return 1
  commit_config_hash "$name"
}
# Runs start function $1 for daemon $2 up to three times: a port picked as free can be taken by
# another instance before the daemon binds it; then the ports named by the remaining arguments
# (variables) are picked again.
start_retrying() { # $1 = start function, $2 = daemon name, rest = port variable names
  local fn=$1 name=$2 v; shift 2
  for _ in 1 2 3; do
    if "$fn"; then save_node_ports; return 0; fi
    if grep -q 'server is not initialized yet' "$LOGS/$name.log"; then
      # containerd answers `ctr version` before its CRI service has initialised; the kubelet
      # exits at once if it asks in between.
      log "$name: containerd's CRI service is still initialising; trying again"
      sleep 2
      continue
    fi
    grep -q 'address already in use' "$LOGS/$name.log" || break
    log "$name: a port was taken meanwhile; picking new ones"
    for v in "$@"; do printf -v "$v" '%s' "$(free_port)"; done
  done
  tail -n 30 "$LOGS/$name.log" >&2
  die "$name did not become healthy (log: $LOGS/$name.log)"
}
kubeconfig_for() { # $1 = file, $2 = user, $3 = cert stem
  ( umask 077; write_if_changed "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: vmsnap-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 < "$CERTS/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 < "$CERTS/$3.crt")
    client-key-data: $(base64 -w0 < "$CERTS/$3.key")
contexts:
- name: default
  context: { cluster: vmsnap-local, user: $2 }
current-context: default
KC
  )
}

# ---- host networking pieces (shared between instances, idempotent) ---------------------------
assert_ranges_free
# The bridge exists before any pod, with the gateway address, so the host (the kubelet's probes)
# reaches pod IPs without the bridge plugin turning on IP forwarding (isGateway: false).
if ! ip link show "$POD_BRIDGE" >/dev/null 2>&1; then
  ip link add "$POD_BRIDGE" type bridge 2>/dev/null || ip link show "$POD_BRIDGE" >/dev/null
fi
ip addr replace "$POD_GATEWAY/${POD_SUBNET#*/}" dev "$POD_BRIDGE"
# IPv4 only: no IPv6 link-local chatter on the bridge.
echo 1 > "/proc/sys/net/ipv6/conf/$POD_BRIDGE/disable_ipv6" 2>/dev/null || true
ip link set "$POD_BRIDGE" up
mkdir -p "$HOST_REFS"
touch "$HOST_REFS/$INSTANCE_ID"
ip route replace prohibit "$SERVICE_CIDR"
ip addr replace "$NODE_IP/32" dev lo

# The kubelet's cgroup root, in every hierarchy. A fresh cpuset cgroup has no CPUs or memory
# nodes until given its parent's.
while read -r h; do
  mkdir -p "$h$CGROUP_ROOT"
  if [[ -f $h$CGROUP_ROOT/cpuset.cpus && -z $(cat "$h$CGROUP_ROOT/cpuset.cpus") ]]; then
    cat "$h/cpuset.cpus" > "$h$CGROUP_ROOT/cpuset.cpus"
    cat "$h/cpuset.mems" > "$h$CGROUP_ROOT/cpuset.mems"
  fi
done < <(cgroup_hierarchies)

# ---- containerd --------------------------------------------------------------------------------
read -r PAUSE_IMAGE PAUSE_ARCHIVE < <(bash "$CLUSTER_DIR/pause-image.sh" | paste -sd' ')
write_if_changed "$CNI_CONF_DIR/10-vmsnap.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
$(cni_bridge_plugin | sed 's/^/    /')
  ]
}
JSON
mkdir -p "$CONTAINERD_DIR/certs.d/_default"
# No registry is reachable: any pull (an image that was never loaded) fails here, locally,
# instead of resolving a registry's name.
write_if_changed "$CONTAINERD_DIR/certs.d/_default/hosts.toml" <<'TOML'
server = "http://127.0.0.1:1"
TOML
write_if_changed "$CONTAINERD_CONFIG" <<TOML
# Generated by cluster/node-up.sh for $CLUSTER_STATE
version = 2
root = "$CONTAINERD_DIR/root"
state = "$CONTAINERD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CONTAINERD_SOCKET"
[ttrpc]
  address = "$CONTAINERD_SOCKET.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$CONTAINERD_DIR/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # These machines lack CAP_SYS_RESOURCE: a sandbox asking for a negative OOM score is refused.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$CONTAINERD_DIR/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CONTAINERD_DIR/certs.d"
TOML

# Pods, and containerd itself, get a resolv.conf without servers: nothing in the stack resolves
# names off the machine (a resolver without servers asks loopback).
write_if_changed "$NODE_DIR/resolv.conf" <<<'# vmsnap local node: no DNS servers (no traffic leaves this machine)'

# containerd runs in its own mount namespace where /etc/resolv.conf has no name servers: a pull
# of an image that was never loaded (containerd 1.6 has no catch-all registry host) then fails
# with a lookup on loopback instead of asking the machine's DNS server.
# Mounts made on the host under the node's directory must still reach it (the kubelet's volumes,
# which runc bind-mounts into containers): the directory is an rshared mount, and the namespace
# is its slave. containerd's own mounts (container root filesystems) stay in its namespace.
if ! findmnt -rn -o TARGET --mountpoint "$NODE_DIR" >/dev/null; then
  mount --bind "$NODE_DIR" "$NODE_DIR"
fi
mount --make-rshared "$NODE_DIR"
containerd_healthy() { ctr --address "$CONTAINERD_SOCKET" --timeout 3s version >/dev/null 2>&1; }
CONTAINERD_BIN="$(command -v containerd)"
start_containerd() {
  cat "$CONTAINERD_CONFIG" "$NODE_DIR/resolv.conf" | ensure_daemon containerd containerd_healthy "$CONTAINERD_BIN" \
    unshare --mount --propagation slave -- sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' \
    "$NODE_DIR/resolv.conf" "$CONTAINERD_BIN" --config "$CONTAINERD_CONFIG"
}
start_retrying start_containerd containerd

# The sandbox image, imported once per archive (the archive name carries its content hash).
if [[ $(cat "$RUN/pause-archive" 2>/dev/null) != "$PAUSE_ARCHIVE" ]] \
   || ! ctr --address "$CONTAINERD_SOCKET" -n k8s.io images ls -q "name==$PAUSE_IMAGE" | grep -q .; then
  images_load "$CONTAINERD_SOCKET" "$PAUSE_ARCHIVE" >/dev/null
  echo "$PAUSE_ARCHIVE" > "$RUN/pause-archive"
fi

# ---- kubelet --------------------------------------------------------------------------------------
kubeconfig_for "$NODE_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" kubelet-client
kubelet_healthy() { curl -sf --max-time 3 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" >/dev/null 2>&1; }
# The config names the ports, so it is written by the start function (a retry picks new ones).
start_kubelet() {
  write_if_changed "$NODE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true, cacheTTL: 30s }
  x509: { clientCAFile: "$CERTS/ca.crt" }
authorization:
  mode: Webhook
  webhook: { cacheAuthorizedTTL: 30s, cacheUnauthorizedTTL: 5s }
tlsCertFile: "$CERTS/kubelet-serving.crt"
tlsPrivateKeyFile: "$CERTS/kubelet-serving.key"
rotateCertificates: false
serverTLSBootstrap: false
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCKET"
cgroupDriver: cgroupfs
cgroupRoot: "$CGROUP_ROOT"
cgroupsPerQOS: true
failSwapOn: false
podLogsDir: "$NODE_DIR/pod-logs"
volumePluginDir: "$NODE_DIR/volume-plugins"
resolvConf: "$NODE_DIR/resolv.conf"
clusterDomain: cluster.local
registerNode: true
serializeImagePulls: false
# Images are built here and cannot be pulled again: never garbage-collect them, and evict only
# when the machine is really out of room.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: "50Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%" }
YAML
  cat "$NODE_DIR/kubelet.yaml" "$NODE_DIR/kubelet.kubeconfig" | ensure_daemon kubelet kubelet_healthy "$K8S_BIN_DIR/kubelet" \
    "$K8S_BIN_DIR/kubelet" \
    --config="$NODE_DIR/kubelet.yaml" \
    --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$KUBELET_ROOT" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP"
}
start_retrying start_kubelet kubelet KUBELET_PORT KUBELET_HEALTHZ_PORT

# ---- kube-scheduler and kube-controller-manager ------------------------------------------------
kubeconfig_for "$NODE_DIR/kube-scheduler.kubeconfig" system:kube-scheduler kube-scheduler
kubeconfig_for "$NODE_DIR/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager
scheduler_healthy() { https_healthz "$SCHEDULER_PORT"; }
controller_manager_healthy() { https_healthz "$CONTROLLER_MANAGER_PORT"; }
start_scheduler() {
  local KC="$NODE_DIR/kube-scheduler.kubeconfig"
  cat "$KC" | ensure_daemon kube-scheduler scheduler_healthy "$K8S_BIN_DIR/kube-scheduler" \
    "$K8S_BIN_DIR/kube-scheduler" \
    --kubeconfig="$KC" --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$NODE_DIR/kube-scheduler-certs" \
    --leader-elect=false
}
start_retrying start_scheduler kube-scheduler SCHEDULER_PORT
start_controller_manager() {
  local KC="$NODE_DIR/kube-controller-manager.kubeconfig"
  cat "$KC" | ensure_daemon kube-controller-manager controller_manager_healthy "$K8S_BIN_DIR/kube-controller-manager" \
    "$K8S_BIN_DIR/kube-controller-manager" \
    --kubeconfig="$KC" --authentication-kubeconfig="$KC" --authorization-kubeconfig="$KC" \
    --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" \
    --cert-dir="$NODE_DIR/kube-controller-manager-certs" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$CERTS/sa.key" \
    --root-ca-file="$CERTS/ca.crt" \
    --cluster-name=vmsnap
}
start_retrying start_controller_manager kube-controller-manager CONTROLLER_MANAGER_PORT

# ---- wait until the node is Ready (registered, CNI initialised) --------------------------------
ready=''
for _ in $(seq 1 240); do
  if [[ $("$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" get node "$NODE_NAME" \
          -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; then
    ready=1; break
  fi
  pid_of kubelet >/dev/null || break
  sleep 0.5
done
[[ -n $ready ]] || { tail -n 30 "$LOGS/kubelet.log" >&2; die "node $NODE_NAME did not become Ready (log: $LOGS/kubelet.log)"; }

cat > "$RUN/node.json" <<JSON
{
    "name": $(json_str "$NODE_NAME"),
    "kubeletRootDir": $(json_str "$KUBELET_ROOT"),
    "containerdSocket": $(json_str "$CONTAINERD_SOCKET"),
    "cgroupRoot": $(json_str "$CGROUP_ROOT"),
    "podSubnet": $(json_str "$POD_SUBNET"),
    "podBridge": $(json_str "$POD_BRIDGE"),
    "serviceCIDR": $(json_str "$SERVICE_CIDR"),
    "nodeIP": $(json_str "$NODE_IP"),
    "sandboxImage": $(json_str "$PAUSE_IMAGE"),
    "kubelet": { "pid": $(pid_of kubelet), "port": $KUBELET_PORT, "log": $(json_str "$LOGS/kubelet.log") },
    "containerd": { "pid": $(pid_of containerd), "config": $(json_str "$CONTAINERD_CONFIG"), "log": $(json_str "$LOGS/containerd.log") },
    "scheduler": { "pid": $(pid_of kube-scheduler), "log": $(json_str "$LOGS/kube-scheduler.log") },
    "controllerManager": { "pid": $(pid_of kube-controller-manager), "log": $(json_str "$LOGS/kube-controller-manager.log") }
}
JSON
