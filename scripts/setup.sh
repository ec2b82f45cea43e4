#!/usr/bin/env bash
# Installs everything vmsnap's tests and demo need on a fresh machine:
# QEMU >= 9.1, the npm packages (building the native addon), the compiled
# TypeScript and the test guest. Idempotent and quiet when all is in place.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VMSNAP_ROOT"

bash scripts/ensure-qemu.sh
# The disk-full test (test/chaos) formats a small ext4 image and loop-mounts it.
[ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ] || apt_install e2fsprogs
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
   [ ! -f agent/native/build/Release/vmsnap_native.node ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
else
  npm run --silent build
fi
bash test/guest/build.sh >/dev/null
