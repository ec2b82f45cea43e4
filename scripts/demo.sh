#!/usr/bin/env bash
# The README's first command: installs what it needs, then boots a demo VM,
# hibernates it to a snapshot file, restores it, and shows its memory intact.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VMSNAP_ROOT"
bash scripts/setup.sh
exec node dist/demo/engine-demo.js
