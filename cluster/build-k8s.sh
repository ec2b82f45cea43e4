#!/usr/bin/env bash
# Builds the Kubernetes commands the local stack runs (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet) from the Go module proxy, in one `go build` so their shared packages
# compile once, and caches them by version outside the repo.
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces staging modules with local
# paths), so a throwaway wrapper module requires it and points every staging module at the
# published k8s.io/<m> v0.Y.Z instead.
#
# Usage: cluster/build-k8s.sh [vX.Y.Z]   (default: $VMSNAP_K8S_VERSION or the pinned one)
# Prints the directory holding the binaries as its last stdout line. A second run is instant.
set -euo pipefail

VERSION="${1:-${VMSNAP_K8S_VERSION:-v1.34.4}}"
CACHE="${VMSNAP_CACHE:-$HOME/.cache/vmsnap}"
OUT_DIR="$CACHE/k8s/$VERSION"
COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
STAMP="$OUT_DIR/.complete"

if [[ -f "$STAMP" ]]; then
  echo "$OUT_DIR"
  exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cache_lock "$OUT_DIR"
if [[ -f "$STAMP" ]]; then echo "$OUT_DIR"; exit 0; fi   # built by whoever held the lock

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || { echo "build-k8s: no Go toolchain found (set GO=/path/to/go)" >&2; exit 1; }

MINOR="${VERSION#v1.}"; MINOR="${MINOR%%.*}"
STAGING_VERSION="v0.${VERSION#v1.}"   # v1.34.4 -> v0.34.4

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-k8s-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

echo "build-k8s: fetching k8s.io/kubernetes@$VERSION go.mod" >&2
# `go mod download -json` needs a module context to run from; an empty one is enough.
printf 'module vmsnap.local/tmp\n' > go.mod
UPSTREAM_GOMOD="$("$GO" mod download -json "k8s.io/kubernetes@$VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
[[ -f "$UPSTREAM_GOMOD" ]] || { echo "build-k8s: could not find go.mod for k8s.io/kubernetes@$VERSION" >&2; exit 1; }

STAGING=( $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$UPSTREAM_GOMOD" | sort -u) )
(( ${#STAGING[@]} > 10 )) || { echo "build-k8s: found only ${#STAGING[@]} staging modules in $UPSTREAM_GOMOD" >&2; exit 1; }
GO_LINE="$(grep -m1 -E '^go [0-9]' "$UPSTREAM_GOMOD")"
GODEBUG_LINES="$(grep -E '^godebug' "$UPSTREAM_GOMOD" || true)"

{
  echo "module vmsnap.local/k8s-build"
  echo
  echo "$GO_LINE"
  [[ -n "$GODEBUG_LINES" ]] && echo "$GODEBUG_LINES"
  echo
  echo "require k8s.io/kubernetes $VERSION"
  echo
  echo "replace ("
  for m in "${STAGING[@]}"; do echo "	$m => $m $STAGING_VERSION"; done
  echo ")"
} > go.mod
# Blank-import the commands so `go mod tidy` keeps exactly what they need.
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in "${COMMANDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'
} > tools.go

echo "build-k8s: resolving modules (${#STAGING[@]} staging modules at $STAGING_VERSION)" >&2
GOFLAGS="-mod=mod" "$GO" mod tidy >&2 2>"$WORK/tidy.log" || { cat "$WORK/tidy.log" >&2; exit 1; }

LDPKG=k8s.io/component-base/version
LDFLAGS="-s -w \
 -X $LDPKG.gitVersion=$VERSION \
 -X $LDPKG.gitMajor=1 \
 -X $LDPKG.gitMinor=$MINOR \
 -X $LDPKG.gitTreeState=clean \
 -X $LDPKG.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
 -X k8s.io/client-go/pkg/version.gitVersion=$VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$MINOR"

echo "build-k8s: compiling ${COMMANDS[*]} $VERSION (10-20 minutes on 2 cores)" >&2
start=$(date +%s)
STAGE="$OUT_DIR/.build.$$"
mkdir -p "$STAGE"
pkgs=(); for c in "${COMMANDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -mod=mod" \
  "$GO" build -ldflags "$LDFLAGS" -o "$STAGE/" "${pkgs[@]}"
for c in "${COMMANDS[@]}"; do mv -f "$STAGE/$c" "$OUT_DIR/$c"; done
rmdir "$STAGE"
touch "$STAMP"   # written last: a half-built set never looks cached
echo "build-k8s: built in $(( $(date +%s) - start ))s" >&2
"$OUT_DIR/kube-apiserver" --version >&2
echo "$OUT_DIR"
