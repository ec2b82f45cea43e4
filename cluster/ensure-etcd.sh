#!/usr/bin/env bash
# Prints the path of an etcd binary as its last stdout line.
# Order: $VMSNAP_ETCD, an etcd already on PATH, the cached copy, else Debian's `etcd-server`
# fetched with `apt-get download` and unpacked into the cache (no package install, so no
# system etcd service is started by the package's init scripts).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -n ${VMSNAP_ETCD:-} ]]; then
  [[ -x $VMSNAP_ETCD ]] || die "VMSNAP_ETCD=$VMSNAP_ETCD is not executable"
  echo "$VMSNAP_ETCD"; exit 0
fi
if command -v etcd >/dev/null 2>&1; then command -v etcd; exit 0; fi

shopt -s nullglob
cached=( "$VMSNAP_CACHE"/k8s/etcd/*/etcd )
if (( ${#cached[@]} )); then echo "${cached[-1]}"; exit 0; fi

cache_lock "$VMSNAP_CACHE/k8s/etcd"
cached=( "$VMSNAP_CACHE"/k8s/etcd/*/etcd )
if (( ${#cached[@]} )); then echo "${cached[-1]}"; exit 0; fi

command -v apt-get >/dev/null || die "no etcd found and no apt-get: install etcd 3.4+ or set VMSNAP_ETCD"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-etcd.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"   # apt's _apt sandbox user must be able to write the .deb here
cd "$tmp"
log "fetching Debian package etcd-server"
if ! apt-get download etcd-server >&2 2>"$tmp/apt.log"; then
  if [[ $(id -u) == 0 ]]; then
    log "apt-get download failed; running apt-get update once"
    apt-get update >&2
    apt-get download etcd-server >&2
  else
    cat "$tmp/apt.log" >&2
    die "apt-get download etcd-server failed (run 'sudo apt-get update' or set VMSNAP_ETCD)"
  fi
fi
deb=( etcd-server_*.deb )
(( ${#deb[@]} == 1 )) || die "expected one etcd-server .deb, got: ${deb[*]:-none}"
version="$(dpkg-deb -f "${deb[0]}" Version)"
dpkg-deb -x "${deb[0]}" x
out="$VMSNAP_CACHE/k8s/etcd/debian-${version//[^A-Za-z0-9._-]/_}"
mkdir -p "$out"
cp x/usr/bin/etcd "$out/etcd.tmp.$$" && mv -f "$out/etcd.tmp.$$" "$out/etcd"
"$out/etcd" --version >&2
echo "$out/etcd"
