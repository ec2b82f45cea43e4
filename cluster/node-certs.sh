#!/usr/bin/env bash
# Creates, once per instance, the certificates a node instance needs, all signed by the
# instance CA that up.sh made (so the admin kubeconfig keeps working):
#   kubelet-client   system:node:<node> in system:nodes (the Node authorizer and NodeRestriction
#                    know a kubelet by exactly this name)
#   kubelet-serving  the kubelet's HTTPS port, IP SANs 127.0.0.1 and the node IP (the API server
#                    verifies it with --kubelet-certificate-authority when it proxies logs and exec)
#   apiserver-kubelet-client  the API server's identity towards the kubelet; in system:masters,
#                    so the kubelet's webhook authorization lets it read logs and exec
#   kube-scheduler, kube-controller-manager  the names bootstrap RBAC grants their roles to
# It also re-signs the API server's serving certificate when it lacks the node instance's
# Service IP (instances created before it ran without a node).
# Usage: node-certs.sh <node-name> <kubernetes-service-ip> <node-ip>
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NODE_NAME=$1 SERVICE_IP=$2 NODE_IP=$3
[[ -f $CERTS/ca.key ]] || die "no instance CA in $CERTS (up.sh creates it)"

sign() { # $1 = file stem, $2 = subject, $3 = extendedKeyUsage, $4 = subjectAltName (optional)
  local stem=$1 subj=$2 eku=$3 san=${4:-}
  ( umask 077
    openssl ecparam -name prime256v1 -genkey -noout -out "$CERTS/$stem.key"
    openssl req -new -key "$CERTS/$stem.key" -subj "$subj" -out "$CERTS/$stem.csr"
    { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
      echo "extendedKeyUsage=$eku"; [[ -n $san ]] && echo "subjectAltName=$san"; } > "$CERTS/$stem.ext"
    openssl x509 -req -in "$CERTS/$stem.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" -CAcreateserial \
      -sha256 -days 3650 -extfile "$CERTS/$stem.ext" -out "$CERTS/$stem.crt.tmp" 2>/dev/null
    mv -f "$CERTS/$stem.crt.tmp" "$CERTS/$stem.crt"
    rm -f "$CERTS/$stem.csr" "$CERTS/$stem.ext" "$CERTS"/*.srl
  ) >&2
}
subject_of() { openssl x509 -in "$1" -noout -subject -nameopt RFC2253 2>/dev/null | sed 's/^subject=//'; }

# The kubelet's client certificate names the node: a different node name needs a new one.
if [[ ! -f $CERTS/kubelet-client.crt || $(subject_of "$CERTS/kubelet-client.crt") != "CN=system:node:$NODE_NAME,O=system:nodes" ]]; then
  log "signing kubelet client certificate for system:node:$NODE_NAME"
  sign kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
fi
has_ip_san() { openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$2\b"; }
if [[ ! -f $CERTS/kubelet-serving.crt ]] || ! has_ip_san "$CERTS/kubelet-serving.crt" "$NODE_IP"; then
  sign kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:127.0.0.1,IP:$NODE_IP,DNS:$NODE_NAME"
fi
[[ -f $CERTS/apiserver-kubelet-client.crt ]] || sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
[[ -f $CERTS/kube-scheduler.crt ]] || sign kube-scheduler "/CN=system:kube-scheduler" clientAuth
[[ -f $CERTS/kube-controller-manager.crt ]] || sign kube-controller-manager "/CN=system:kube-controller-manager" clientAuth

if ! has_ip_san "$CERTS/apiserver.crt" "$SERVICE_IP"; then
  log "re-signing the API server certificate with the Service IP $SERVICE_IP"
  sign apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
fi
