# Names and paths of the local node (sourced by node-up.sh and down.sh, after lib.sh).
#
# Several instances may run a node on one machine (a developer's, the tests'), so everything a
# kubelet or containerd would otherwise put in a machine-wide place is per instance: state under
# $CLUSTER_STATE/node, a cgroup root named after the instance, own sockets and ports. Only the
# pod bridge and its address pool are shared (one subnet, one host-local pool, so no two
# instances ever hand out the same pod IP).

NODE_DIR="$CLUSTER_STATE/node"
CONTAINERD_DIR="$NODE_DIR/containerd"
CONTAINERD_SOCKET="$CONTAINERD_DIR/containerd.sock"
CONTAINERD_CONFIG="$CONTAINERD_DIR/config.toml"
KUBELET_ROOT="$NODE_DIR/kubelet"
CNI_CONF_DIR="$NODE_DIR/cni"
INSTANCE_ID="$(printf '%s' "$CLUSTER_STATE" | sha256sum | cut -c1-12)"
CGROUP_ROOT="/vmsnap-$INSTANCE_ID"

# Pods that are not hostNetwork get an address on this bridge, in a documentation range, with
# no routes: they reach each other and the host's bridge address, nothing else.
POD_BRIDGE=vmsnap0
POD_SUBNET=198.51.100.0/24
POD_GATEWAY=198.51.100.1
CNI_NETWORK=vmsnap-pods

# The `kubernetes` Service's ClusterIP range. No kube-proxy runs, so a dial to a ClusterIP would
# follow the default route off the machine; a local `prohibit` route makes it fail at once.
SERVICE_CIDR=203.0.113.0/24
SERVICE_IP=203.0.113.1
# The node's InternalIP, a /32 in another documentation range, on the loopback interface. The
# kubelet refuses a 127.0.0.0/8 node IP ("nodeIP can't be loopback address") and then reports no
# address at all, so the API server could not reach it for logs and exec; an address on `lo` stays
# on this machine (pods have no route to it), and no host name is ever looked up.
NODE_IP=192.0.2.1
# The route, the address and the bridge are machine-wide: each node instance holds a reference;
# the last one out removes them.
HOST_REFS=/run/vmsnap/node-refs

NODE_NAME_FILE="$RUN/node-name"

# A CNI plugin config for the bridge (also used by down.sh to release addresses by hand).
cni_bridge_plugin() {
  cat <<JSON
{
  "type": "bridge",
  "bridge": "$POD_BRIDGE",
  "isGateway": false,
  "ipMasq": false,
  "hairpinMode": true,
  "ipam": {
    "type": "host-local",
    "ranges": [[{ "subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY" }]]
  }
}
JSON
}

# Every cgroup v1 hierarchy (or the v2 root) the kubelet's cgroup root must exist in.
cgroup_hierarchies() {
  local d
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then echo /sys/fs/cgroup; return; fi   # unified (v2)
  for d in /sys/fs/cgroup/*; do
    [[ -d $d && -f $d/cgroup.procs && ! -L $d ]] && echo "$d"
  done
  return 0
}
