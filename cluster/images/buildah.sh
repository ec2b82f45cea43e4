#!/usr/bin/env bash
# buildah on the store that cluster/images/build.sh builds into, e.g.
#   bash cluster/images/buildah.sh images
#   bash cluster/images/buildah.sh run "$(bash cluster/images/buildah.sh from localhost/vmsnap/vm:0.1.0)" -- qemu-system-x86_64 --version
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bh "$@"
