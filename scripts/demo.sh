#!/usr/bin/env bash
# The README's first command: installs what it needs, starts the embedded
# default (local control plane, chart, operator, agent, demo VM), snapshots and
# restores the VM through Kubernetes, and leaves it all running.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VMSNAP_ROOT"
bash scripts/setup.sh
exec node dist/demo/k8s-demo.js "$@"
