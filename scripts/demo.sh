#!/usr/bin/env bash
# The README's first command: installs what it needs, starts the embedded
# default (local control plane, chart, operator, agent, an S3 server, demo VM),
# snapshots the VM (and uploads the snapshot) and restores it through Kubernetes,
# and leaves it all running.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VMSNAP_ROOT"
bash scripts/setup.sh
# The S3 server the demo uploads to: built once, cached by version.
bash cluster/ensure-seaweedfs.sh >/dev/null
exec node dist/demo/k8s-demo.js "$@"
