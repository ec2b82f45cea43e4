#!/usr/bin/env bash
# Installs everything vmsnap's tests and demo need on a fresh machine:
# QEMU >= 9.1 (and qemu-img), e2fsprogs, fio (the benchmark's disk limit), the npm packages (building the native addon), the compiled
# TypeScript and the test guest. Idempotent and quiet when all is in place.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$VMSNAP_ROOT"

bash scripts/ensure-qemu.sh
# Disk snapshots: qemu-img makes restore overlays; the disk tests build and
# check ext4 images (mkfs.ext4, e2fsck, debugfs); the disk-full test (test/chaos)
# loop-mounts a small ext4 image.
command -v qemu-img >/dev/null || { log "installing qemu-utils"; apt_install qemu-utils; }
command -v debugfs >/dev/null && command -v mkfs.ext4 >/dev/null || { log "installing e2fsprogs"; apt_install e2fsprogs; }
command -v zstd >/dev/null || { log "installing zstd (repository compression)"; apt_install zstd; }
# The benchmark's yardstick for the disk (bench/baselines.ts).
bash scripts/ensure-fio.sh
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] ||
   [ ! -f agent/native/build/Release/vmsnap_native.node ]; then
  log "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
else
  # A checkout whose addon source changed since it was built (a new syscall) rebuilds it.
  if [ agent/native/vmsnap_native.c -nt agent/native/build/Release/vmsnap_native.node ]; then
    log "rebuilding the native addon"
    node agent/native/build.mjs >/dev/null
  fi
  npm run --silent build
fi
bash test/guest/build.sh >/dev/null
