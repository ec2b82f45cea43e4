#!/usr/bin/env bash
# End-to-end run on a throwaway kind cluster, for machines with Docker:
#   1. kind create cluster (its own kubeconfig; ~/.kube/config is never touched)
#   2. docker build the image from the repository's Dockerfile, kind load it into the node
#   3. apply crds/, helm upgrade --install the chart with that image, wait for the operator and agent
#   4. start a small QEMU VM "demo" in namespace default, in a pod on the node, with its QMP
#      socket where the agent discovers it (<vmRoot>/default/demo/qmp.sock)
#   5. apply examples/ in order and wait for each phase: snapshot, restore in place, restore a
#      copy, hibernate
#
# Usage: bash scripts/kind-e2e.sh
# Environment:
#   KIND_CLUSTER_NAME   cluster name                      (default vmsnap-e2e)
#   KIND_NODE_IMAGE     kind node image                   (default: kind's own default)
#   VMSNAP_E2E_KEEP=1   keep the cluster afterwards (it is kept anyway after a failure, and a
#                       cluster that existed before this script is never deleted)
#   VMSNAP_E2E_TIMEOUT  seconds to wait for each phase     (default 300)
#   VMSNAP_IMAGE        image name to build and load      (default vmsnap:kind-e2e)
# Needs: bash >= 3.2, docker (a running engine), kind, kubectl and helm on PATH (kubectl and helm fall back to
# the ones `npm run cluster:up` caches).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-vmsnap-e2e}"
IMAGE="${VMSNAP_IMAGE:-vmsnap:kind-e2e}"
TIMEOUT="${VMSNAP_E2E_TIMEOUT:-300}"
RELEASE=vmsnap
SYSTEM_NS=vmsnap-system
VM_NS=default      # the examples are written for namespace default and VM "demo"
VM_NAME=demo
VM_ROOT=/var/lib/vmsnap/vms   # the chart's agent.vmRoot default

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'kind-e2e: %s\n' "$*" >&2; exit 1; }

# ---- prerequisites ------------------------------------------------------------------------------
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable (docker info failed)"
command -v kind >/dev/null || die "kind is not installed (see https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
if ! command -v kubectl >/dev/null || ! command -v helm >/dev/null; then
  log "kubectl/helm not on PATH: using the ones cluster/ensure-tools.sh caches"
  PATH="$(bash "$ROOT/cluster/ensure-tools.sh" | tail -n1):$PATH"
fi
command -v kubectl >/dev/null && command -v helm >/dev/null || die "kubectl and helm are needed"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-kind-e2e.XXXXXX")"
export KUBECONFIG="$WORK/kubeconfig"

created_cluster=0
have_cluster=0
status=1
cleanup() {
  if [[ $have_cluster -eq 0 ]]; then
    [[ $status -eq 0 ]] || log "FAILED before a cluster was available"
    rm -rf "$WORK"
    return
  fi
  if [[ $status -ne 0 ]]; then
    diagnostics || true
    log "FAILED; the cluster is kept for inspection: KUBECONFIG=$KUBECONFIG kubectl get vmsnap -A"
    log "delete it with: kind delete cluster --name $CLUSTER"
    return
  fi
  if [[ $created_cluster -eq 1 && ${VMSNAP_E2E_KEEP:-0} != 1 ]]; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  else
    log "cluster $CLUSTER kept: export KUBECONFIG=$KUBECONFIG"
  fi
}
trap cleanup EXIT

diagnostics() {
  log "diagnostics"
  kubectl get nodes,pods -A -o wide || true
  kubectl get vmsnapshots,vmrestores -A -o wide || true
  kubectl get vminventories -o yaml || true
  kubectl get events -A --sort-by=.lastTimestamp | tail -n 40 || true
  kubectl -n "$SYSTEM_NS" logs -l app.kubernetes.io/component=operator --tail=100 --all-containers || true
  kubectl -n "$SYSTEM_NS" logs -l app.kubernetes.io/component=agent --tail=200 --all-containers || true
  kubectl -n "$VM_NS" logs "vm-$VM_NAME" --tail=50 || true
}

# ---- 1. cluster ---------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >/dev/null
else
  log "creating kind cluster $CLUSTER"
  node_image=()
  [[ -n ${KIND_NODE_IMAGE:-} ]] && node_image=(--image "$KIND_NODE_IMAGE")
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s ${node_image[@]+"${node_image[@]}"}
  created_cluster=1
fi
have_cluster=1
kubectl cluster-info >/dev/null

# ---- 2. image -----------------------------------------------------------------------------------
log "building $IMAGE from $ROOT/Dockerfile"
docker build -t "$IMAGE" "$ROOT"
log "loading $IMAGE into the kind node(s)"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# The agent mounts /dev/kvm only when every node has it; kind nodes often do not.
kvm=false
first_node="$(kind get nodes --name "$CLUSTER" | head -n1)"
[[ -n $first_node ]] || die "kind reports no nodes for cluster $CLUSTER"
if docker exec "$first_node" test -c /dev/kvm 2>/dev/null; then kvm=true; fi
log "KVM on the node: $kvm (QEMU uses TCG either way in this test)"

# ---- 3. CRDs and chart --------------------------------------------------------------------------
# Server-side apply handles first installs and upgrades alike (Helm never upgrades CRDs).
log "applying crds/"
kubectl apply --server-side --force-conflicts -f "$ROOT/crds/"
kubectl wait --for=condition=Established --timeout=60s -f "$ROOT/crds/"

log "installing the chart (release $RELEASE in $SYSTEM_NS)"
# Split name:tag (a ':' inside a registry host:port is not a tag).
repo=$IMAGE tag=latest
if [[ ${IMAGE##*/} == *:* ]]; then repo="${IMAGE%:*}" tag="${IMAGE##*:}"; fi
helm upgrade --install "$RELEASE" "$ROOT/helm/vmsnap" \
  --namespace "$SYSTEM_NS" --create-namespace --skip-crds \
  --set image.repository="$repo" --set image.tag="$tag" --set image.pullPolicy=Never \
  --set agent.vmSource=sockets --set agent.singleTenantHostsAcknowledged=true --set agent.kvm.enabled="$kvm" --set logLevel=debug \
  --wait --timeout 5m
kubectl -n "$SYSTEM_NS" rollout status deployment/"$RELEASE"-operator --timeout=180s
kubectl -n "$SYSTEM_NS" rollout status daemonset/"$RELEASE"-agent --timeout=180s

# ---- 4. a VM for the examples -------------------------------------------------------------------
# On a reused cluster, start from scratch: objects from an earlier run would already be Succeeded.
kubectl delete --ignore-not-found --wait=true --timeout=180s -f "$ROOT/examples/" >/dev/null
# A firmware-only guest (no disk, no kernel) is enough: its RAM and device state are what a
# snapshot saves. The pod runs as root to create the socket in the hostPath the agent scans.
log "starting VM $VM_NS/$VM_NAME"
kubectl delete pod "vm-$VM_NAME" -n "$VM_NS" --ignore-not-found --wait=true >/dev/null
kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: vm-$VM_NAME
  namespace: $VM_NS
  labels: {app.kubernetes.io/name: vmsnap-e2e-vm}
spec:
  restartPolicy: Never
  containers:
    - name: qemu
      image: $IMAGE
      imagePullPolicy: Never
      command:
        - qemu-system-x86_64
        - -name
        - $VM_NAME
        - -machine
        - q35
        - -accel
        - tcg
        - -m
        - "256"
        - -smp
        - "1"
        - -nodefaults
        - -display
        - none
        - -serial
        - none
        - -qmp
        - unix:$VM_ROOT/$VM_NS/$VM_NAME/qmp.sock,server=on,wait=off
      volumeMounts:
        - {name: vm-dir, mountPath: $VM_ROOT/$VM_NS/$VM_NAME}
  volumes:
    - name: vm-dir
      hostPath: {path: $VM_ROOT/$VM_NS/$VM_NAME, type: DirectoryOrCreate}
YAML
kubectl wait pod/"vm-$VM_NAME" -n "$VM_NS" --for=condition=Ready --timeout=180s

log "waiting for an agent to publish VM $VM_NS/$VM_NAME in its VMInventory"
deadline=$((SECONDS + TIMEOUT))
until kubectl get vminventories -o jsonpath='{range .items[*].status.vms[*]}{.namespace}/{.name}{"\n"}{end}' 2>/dev/null \
    | grep -qx "$VM_NS/$VM_NAME"; do
  (( SECONDS < deadline )) || die "no VMInventory lists $VM_NS/$VM_NAME after ${TIMEOUT}s"
  sleep 2
done
kubectl get vminventories

# ---- 5. the examples ----------------------------------------------------------------------------
# wait_phase <resource> <name>: until status.phase is Succeeded; stops early on Failed.
wait_phase() {
  local resource=$1 name=$2 phase deadline=$((SECONDS + TIMEOUT))
  log "waiting for $resource/$name to succeed"
  while :; do
    phase="$(kubectl get "$resource" "$name" -n "$VM_NS" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    case $phase in
      Succeeded) kubectl get "$resource" "$name" -n "$VM_NS"; return 0 ;;
      Failed) die "$resource/$name failed: $(kubectl get "$resource" "$name" -n "$VM_NS" -o jsonpath='{.status.error.message}')" ;;
    esac
    (( SECONDS < deadline )) || die "$resource/$name is still '${phase:-<no phase>}' after ${TIMEOUT}s"
    sleep 2
  done
}

log "applying examples/vmsnapshotclass.yaml"
kubectl apply --validate=strict -f "$ROOT/examples/vmsnapshotclass.yaml"

log "applying examples/vmsnapshot.yaml"
kubectl apply --validate=strict -f "$ROOT/examples/vmsnapshot.yaml"
wait_phase vmsnapshot demo-snapshot
kubectl wait vmsnapshot/demo-snapshot -n "$VM_NS" --for=condition=Ready --timeout=30s
[[ "$(kubectl get vmsnapshot demo-snapshot -n "$VM_NS" -o jsonpath='{.status.readyToUse}')" == true ]] \
  || die "demo-snapshot succeeded but is not readyToUse"

log "applying examples/vmrestore.yaml (roll demo back in place)"
kubectl apply --validate=strict -f "$ROOT/examples/vmrestore.yaml"
wait_phase vmrestore demo-restore

log "applying examples/restore-copy.yaml (start demo-copy from the same snapshot)"
kubectl apply --validate=strict -f "$ROOT/examples/restore-copy.yaml"
wait_phase vmrestore demo-copy

log "applying examples/hibernate.yaml (save demo, then stop it)"
kubectl apply --validate=strict -f "$ROOT/examples/hibernate.yaml"
wait_phase vmsnapshot demo-hibernate

kubectl get vmsnapshots,vmrestores -n "$VM_NS" -o wide
kubectl get vminventories
status=0
log "kind e2e passed"
