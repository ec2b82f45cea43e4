#!/usr/bin/env bash
# Prints the path of a SeaweedFS `weed` binary as its last stdout line.
# Order: $VMSNAP_WEED, the cached build for SEAWEEDFS_VERSION, else a build from the Go module
# proxy through a wrapper module (seaweedfs' go.mod has a `replace`, so `go install` refuses it),
# cached under $VMSNAP_CACHE/seaweedfs/<version>/weed. A build takes minutes on 2 cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
if [[ -n ${VMSNAP_WEED:-} ]]; then
  [[ -x $VMSNAP_WEED ]] || die "VMSNAP_WEED=$VMSNAP_WEED is not executable"
  echo "$VMSNAP_WEED"; exit 0
fi
dir="$VMSNAP_CACHE/seaweedfs/$SEAWEEDFS_VERSION"
if [[ -x $dir/weed ]]; then echo "$dir/weed"; exit 0; fi
cache_lock "$VMSNAP_CACHE/seaweedfs"
if [[ -x $dir/weed ]]; then echo "$dir/weed"; exit 0; fi

command -v go >/dev/null || die "no go toolchain: install Go or set VMSNAP_WEED"
src="$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-weed.XXXXXX")"
trap 'rm -rf "$src"' EXIT
cat > "$src/go.mod" <<GOMOD
module vmsnap.local/weedbuild

go 1.26.6

require github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION

replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
GOMOD
cat > "$src/tools.go" <<'GO'
//go:build tools

package weedbuild

import _ "github.com/seaweedfs/seaweedfs/weed"
GO
log "building SeaweedFS weed $SEAWEEDFS_VERSION (several minutes)"
( cd "$src" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod tidy -e >&2 \
  && mkdir -p "$dir.tmp" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -tags tools -o "$dir.tmp/weed" github.com/seaweedfs/seaweedfs/weed >&2 )
mv "$dir.tmp" "$dir"
echo "$dir/weed"
