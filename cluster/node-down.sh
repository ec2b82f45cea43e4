#!/usr/bin/env bash
# Stops the local node of an instance, in reverse order of node-up.sh, and leaves nothing
# running or mounted: controller-manager, scheduler, kubelet (so nothing restarts containers),
# every container task, containerd and leftover shims; then releases the pods' bridge addresses,
# network namespaces, mounts under the node's state, its cgroups, and (when no other instance
# runs a node) the Service-range route, the node IP and the pod bridge.
# Called by down.sh (and by up.sh when an instance switches to running without a node) with the
# instance lock held. Idempotent. Images and containerd's content stay for the next start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$CLUSTER_DIR/node-lib.sh"

[[ -d $NODE_DIR ]] || exit 0

stop_pid kube-controller-manager kube-scheduler kubelet

CTR=(ctr --address "$CONTAINERD_SOCKET" -n k8s.io --timeout 10s)
sandboxes=()
if pid_of containerd >/dev/null; then
  mapfile -t tasks < <("${CTR[@]}" tasks ls -q 2>/dev/null || true)
  for t in "${tasks[@]}"; do "${CTR[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
  for t in "${tasks[@]}"; do
    for _ in $(seq 1 50); do
      "${CTR[@]}" tasks delete "$t" >/dev/null 2>&1 && break
      "${CTR[@]}" tasks ls -q 2>/dev/null | grep -qx "$t" || break
      sleep 0.1
    done
  done
  # The network namespace of every pod sandbox, to release its address below (the kubelet
  # would have done it through the CRI; it is already stopped).
  mapfile -t sandboxes < <("${CTR[@]}" containers ls -q 'labels."io.cri-containerd.kind"==sandbox' 2>/dev/null || true)
  for s in "${sandboxes[@]}"; do
    ns="$("${CTR[@]}" containers info "$s" 2>/dev/null \
      | jq -r '.Spec.linux.namespaces[]? | select(.type=="network") | .path // empty' || true)"
    echo "$s ${ns:--}"
  done > "$RUN/sandbox-netns"
fi
stop_pid containerd

# Shims of this containerd that outlived it (matched by our socket path on their command line).
for p in /proc/[0-9]*; do
  cmd="$(tr '\0' ' ' 2>/dev/null < "$p/cmdline")" || continue
  if [[ $cmd == *containerd-shim* && $cmd == *"-address $CONTAINERD_SOCKET "* ]]; then
    kill -KILL "${p#/proc/}" 2>/dev/null || true
  fi
done

# Release pod addresses from the shared pool: CNI DEL of the bridge plugin without a network
# namespace releases the sandbox's host-local address. The namespaces themselves were bind-mounted
# in containerd's own mount namespace (node-up.sh), gone with it; the veth pairs went with them.
# What is left on the host is each namespace's empty mount-point file.
if [[ -f $RUN/sandbox-netns ]]; then
  conf="$(cni_bridge_plugin | jq -c --arg n "$CNI_NETWORK" '. + {cniVersion: "1.0.0", name: $n}')"
  while read -r id ns; do
    CNI_COMMAND=DEL CNI_CONTAINERID="$id" CNI_NETNS='' CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
      /usr/lib/cni/bridge <<<"$conf" >/dev/null 2>&1 || true
    if [[ $ns == /var/run/netns/cni-* || $ns == /run/netns/cni-* ]]; then
      umount "$ns" 2>/dev/null || true
      rm -f "$ns"
    fi
  done < "$RUN/sandbox-netns"
  rm -f "$RUN/sandbox-netns"
fi

# Everything the kubelet and containerd mounted under the node's state (volumes, rootfs, shm),
# deepest first, then the node directory's own shared bind mount (node-up.sh).
findmnt -rn -o TARGET | awk -v d="$NODE_DIR/" 'index($0, d) == 1' | sort -r | while read -r m; do
  umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
done
while findmnt -rn --mountpoint "$NODE_DIR" >/dev/null; do umount -l "$NODE_DIR" || break; done

# The kubelet's cgroup tree, deepest first (empty now that every task is gone).
while read -r h; do
  [[ -d $h$CGROUP_ROOT ]] || continue
  find "$h$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null || true
done < <(cgroup_hierarchies)

rm -f "$HOST_REFS/$INSTANCE_ID"
if [[ -z $(ls -A "$HOST_REFS" 2>/dev/null) ]]; then
  ip route del prohibit "$SERVICE_CIDR" 2>/dev/null || true
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  ip link del "$POD_BRIDGE" 2>/dev/null || true
fi
rm -f "$RUN/node.json"
