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

# Every address the node adds lives in 198.18.0.0/15, the range reserved for benchmarking
# (RFC 2544), which no network routes: the documentation ranges are not safe here, since hosted
# machines use them (this one's gateway is 192.0.2.1 and its package registries resolve into
# 203.0.113.0/24). node-up.sh refuses to start if the machine already uses any of these ranges.
#
# Pods that are not hostNetwork get an address on this bridge, with no routes: they reach each
# other and the host's bridge address, nothing else.
POD_BRIDGE=vmsnap0
POD_SUBNET=198.18.0.0/24
POD_GATEWAY=198.18.0.1
CNI_NETWORK=vmsnap-pods

# The `kubernetes` Service's ClusterIP range. No kube-proxy runs, so a dial to a ClusterIP would
# follow the default route off the machine; a local `prohibit` route makes it fail at once.
SERVICE_CIDR=198.18.1.0/24
SERVICE_IP=198.18.1.1
# The node's InternalIP, a /32 on the loopback interface. The
# kubelet refuses a 127.0.0.0/8 node IP ("nodeIP can't be loopback address") and then reports no
# address at all, so the API server could not reach it for logs and exec; an address on `lo` stays
# on this machine (pods have no route to it), and no host name is ever looked up.
NODE_IP=198.18.2.1

ip_to_int() { local IFS=.; set -- $1; echo $(( ($1 << 24) | ($2 << 16) | ($3 << 8) | $4 )); }
ip_in_cidr() { # $1 = address, $2 = a.b.c.d/len
  local len=${2#*/} mask
  mask=$(( len == 0 ? 0 : (0xffffffff << (32 - len)) & 0xffffffff ))
  (( ($(ip_to_int "$1") & mask) == ($(ip_to_int "${2%/*}") & mask) ))
}

# Refuses to take a range this machine already uses: a route or address inside or around it (other
# than the default route and the node's own pieces), its default gateway, or its name server.
assert_ranges_free() {
  local cidr line gw ns
  gw="$(ip -4 route show default | sed -n 's/.* via \([0-9.]*\).*/\1/p' | head -n1)"
  ns="$(sed -n 's/^nameserver \([0-9.]*\).*/\1/p' /etc/resolv.conf 2>/dev/null | head -n1)"
  for cidr in "$POD_SUBNET" "$SERVICE_CIDR" "$NODE_IP/32"; do
    while read -r line; do
      [[ -z $line || $line == default* ]] && continue
      [[ $line == *" dev $POD_BRIDGE "* || $line == "prohibit $SERVICE_CIDR"* ]] && continue
      die "the machine already routes $cidr ($line): the local node's addresses would collide with its network"
    done < <(ip -4 -o route show root "$cidr"; ip -4 -o route show match "${cidr%/*}")
    if ip -4 -o addr show | grep -v " lo " | grep -v " $POD_BRIDGE " | grep -q " ${cidr%/*}/"; then
      die "an interface of this machine already has an address of $cidr"
    fi
    for addr in "$gw" "$ns"; do
      [[ -n $addr ]] || continue
      if ip_in_cidr "$addr" "$cidr"; then
        die "$addr (this machine's gateway or name server) lies in $cidr, which the local node would take"
      fi
    done
  done
}
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
