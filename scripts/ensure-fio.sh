#!/usr/bin/env bash
# fio measures the disk's limit in the benchmark (sequential O_DIRECT, several
# requests in flight). Installs Debian's package when missing; quiet otherwise.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v fio >/dev/null || { log "installing fio"; apt_install fio; }
