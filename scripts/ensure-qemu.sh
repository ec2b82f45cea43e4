#!/usr/bin/env bash
# Installs QEMU >= 9.1 (mapped-ram + direct-io) from Debian's bookworm-backports
# suite when the machine's QEMU is missing or older. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v
  v="$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
  set -- $v
  [ "${1:-0}" -gt 9 ] || { [ "${1:-0}" -eq 9 ] && [ "${2:-0}" -ge 1 ]; }
}

# Adds the backports suite to the machine's existing Debian source (same mirror).
add_backports_suite() {
  if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then return; fi
  local deb822=/etc/apt/sources.list.d/debian.sources
  if [ -f "$deb822" ] && grep -q '^Suites:.*\bbookworm\b' "$deb822"; then
    as_root sed -i '0,/^Suites:\(.*\)\bbookworm\b\(.*\)$/s//Suites:\1bookworm\2 bookworm-backports/' "$deb822"
  elif [ -f /etc/apt/sources.list ] && grep -qE '^deb [^ ]+ bookworm main' /etc/apt/sources.list; then
    grep -E '^deb [^ ]+ bookworm main' /etc/apt/sources.list | head -1 | sed 's/ bookworm main.*/ bookworm-backports main/' |
      as_root tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  else
    die "cannot find a Debian bookworm apt source to add bookworm-backports to; install QEMU >= 9.1 by hand"
  fi
  APT_UPDATED=0
}

if qemu_ok; then exit 0; fi
log "installing QEMU >= 9.1 from bookworm-backports"
add_backports_suite
apt_update_once
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
qemu_ok || die "QEMU >= 9.1 is still not installed ($(qemu-system-x86_64 --version | head -1))"
