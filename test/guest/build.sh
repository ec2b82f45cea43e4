#!/usr/bin/env bash
# Builds the vmsnap test guest (Debian cloud kernel + static /init initramfs)
# into ${VMSNAP_CACHE:-$HOME/.cache/vmsnap}/guest/<key>/ and prints the path of
# <key>/guest.json ({"kernel": ..., "initrd": ...}) as the last stdout line.
#
# Idempotent and cached: <key> = <kernel package version>-<hash of init.c and
# this script>; a second run only asks apt-cache for the kernel version.
# Quiet unless something fails. Safe to run concurrently (flock).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${VMSNAP_CACHE:-$HOME/.cache/vmsnap}/guest"
mkdir -p "$cache_root"

log="$(mktemp -t vmsnap-guest-build.XXXXXX)"
work=""
cleanup() {
  rm -f "$log"
  if [[ -n "$work" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

die() {
  echo "vmsnap guest build: $*" >&2
  if [[ -s "$log" ]]; then
    echo "---- log ----" >&2
    tail -n 50 "$log" >&2
  fi
  exit 1
}

# Runs a command with its output going to the log (shown only on failure).
quiet() {
  "$@" >>"$log" 2>&1 || die "command failed: $*"
}

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

apt_updated=0
apt_update_once() {
  if [[ $apt_updated -eq 0 ]]; then
    quiet as_root apt-get update -qq
    apt_updated=1
  fi
}

# Install a Debian package if the given command is missing.
need_cmd() {
  local cmd="$1" pkg="$2"
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >>"$log" 2>&1; then
    apt_update_once
    quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg"
  fi
  command -v "$cmd" >/dev/null 2>&1 || die "could not install $cmd (package $pkg)"
}

# Name of the versioned kernel package that linux-image-cloud-amd64 depends on
# (its apt candidate: the newest bookworm offers under the default pinning,
# security updates included, backports excluded).
kernel_pkg() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}
candidate_version() {
  apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n 1
}

# Fingerprint of apt's view of the archive: the answer of apt-cache only
# changes when the package lists or the apt configuration do.
apt_fingerprint() {
  {
    stat -c '%n %s %Y' /var/lib/apt/lists/* /etc/apt/sources.list /etc/apt/sources.list.d/* \
      /etc/apt/preferences /etc/apt/preferences.d/* /etc/apt/apt.conf.d/* 2>/dev/null || true
  } | sha256sum | cut -c1-16
}

# Resolve the kernel package (refreshing apt lists once if apt knows nothing).
# apt-cache takes ~1 s here (no pkgcache.bin), so the answer is memoised per
# apt fingerprint: a repeated build costs a few stat calls.
resolve_kernel() {
  local memo fp
  memo="$cache_root/.kernel-resolved"
  fp="$(apt_fingerprint)"
  if [[ -f "$memo" ]]; then
    local mfp mpkg mver
    read -r mfp mpkg mver <"$memo" || true
    if [[ "$mfp" == "$fp" && -n "${mpkg:-}" && -n "${mver:-}" ]]; then
      pkg="$mpkg" ver="$mver"
      return 0
    fi
  fi
  pkg="$(kernel_pkg || true)"
  if [[ -z "$pkg" ]]; then
    apt_update_once
    fp="$(apt_fingerprint)"
    pkg="$(kernel_pkg || true)"
  fi
  [[ -n "$pkg" ]] || return 1
  ver="$(candidate_version "$pkg")"
  [[ -n "$ver" && "$ver" != "(none)" ]] || return 1
  printf '%s %s %s\n' "$fp" "$pkg" "$ver" >"$memo.tmp.$$"
  mv -f "$memo.tmp.$$" "$memo"
}

pkg="" ver=""
src_hash="$(cat "$here/init.c" "$here/build.sh" | sha256sum | cut -c1-12)"

if ! resolve_kernel; then
  # Offline / no apt: fall back to the last build if it matches this source.
  if [[ -f "$cache_root/current/guest.json" && "$(readlink "$cache_root/current")" == *"-$src_hash" ]]; then
    echo "$cache_root/current/guest.json"
    exit 0
  fi
  die "cannot find a linux-image-*-cloud-amd64 package with apt-cache"
fi

key="${pkg#linux-image-}-${ver//[^A-Za-z0-9.+~-]/_}-$src_hash"
out="$cache_root/$key"
json="$out/guest.json"

finish() {
  ln -sfn "$key" "$cache_root/.current.tmp.$$"
  mv -Tf "$cache_root/.current.tmp.$$" "$cache_root/current"
  echo "$json"
}

if [[ -f "$json" ]]; then
  finish
  exit 0
fi

# Serialise concurrent builds (jest workers); re-check after taking the lock.
exec 9>"$cache_root/.lock"
flock 9
if [[ -f "$json" ]]; then
  finish
  exit 0
fi

need_cmd gcc gcc
need_cmd cpio cpio
need_cmd gzip gzip
need_cmd dpkg dpkg

work="$(mktemp -d "$cache_root/.build.XXXXXX")"

# Static glibc for `gcc -static`.
if ! echo 'int main(void){return 0;}' | gcc -static -x c -o "$work/probe" - >/dev/null 2>&1; then
  quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libc6-dev
fi

# Kernel and the modules the disk mode loads (virtio_blk is a module in the
# cloud kernel; ext4 is built in): cached per package version, shared by every
# init.c revision. Listed in load order (dependencies first).
disk_modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk)
kdir="$cache_root/kernel/${pkg}_${ver//[^A-Za-z0-9.+~-]/_}"
if [[ ! -f "$kdir/vmlinuz" || ! -f "$kdir/modules/virtio_blk.ko" ]]; then
  mkdir -p "$work/deb" "$work/x"
  cd "$work/deb"
  quiet apt-get download -qq "$pkg=$ver"
  cd "$here"
  deb="$(ls "$work"/deb/*.deb 2>/dev/null | head -n 1)"
  [[ -n "$deb" ]] || die "apt-get download produced no .deb"
  quiet dpkg -x "$deb" "$work/x"
  vmlinuz="$(ls "$work"/x/boot/vmlinuz-* 2>/dev/null | head -n 1)"
  [[ -n "$vmlinuz" ]] || die "no boot/vmlinuz-* in $deb"
  mkdir -p "$kdir" "$work/mods"
  for m in "${disk_modules[@]}"; do
    ko="$(find "$work"/x/lib/modules -name "$m.ko*" | head -n 1)"
    [[ -n "$ko" ]] || die "no module $m in $deb"
    case "$ko" in
      *.xz) xz -dc "$ko" >"$work/mods/$m.ko" ;;
      *.zst) zstd -qdc "$ko" >"$work/mods/$m.ko" ;;
      *) cp "$ko" "$work/mods/$m.ko" ;;
    esac
  done
  rm -rf "$kdir/modules"
  mv -T "$work/mods" "$kdir/modules"
  cp "$vmlinuz" "$kdir/.vmlinuz.tmp.$$"
  mv -f "$kdir/.vmlinuz.tmp.$$" "$kdir/vmlinuz"
fi

# Initramfs: /init, the disk-mode modules and the mount points it uses (it
# mounts devtmpfs and proc itself, so no device nodes are needed and no root is
# needed to pack it).
root="$work/root"
mkdir -p "$root/dev" "$root/proc" "$root/mnt" "$root/lib/modules"
quiet gcc -static -O2 -s -Wall -Wextra -o "$root/init" "$here/init.c"
chmod 0755 "$root/init"
for m in "${disk_modules[@]}"; do cp "$kdir/modules/$m.ko" "$root/lib/modules/"; done
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc -R 0:0 --reproducible 2>>"$log" | gzip -9n >"$work/initrd.img") ||
  die "packing the initramfs failed"

mkdir -p "$work/out"
mv "$work/initrd.img" "$work/out/initrd.img"
cp "$root/init" "$work/out/init"
ln "$kdir/vmlinuz" "$work/out/vmlinuz" 2>/dev/null || cp "$kdir/vmlinuz" "$work/out/vmlinuz"
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }
printf '{"kernel": %s, "initrd": %s}\n' "$(json_str "$out/vmlinuz")" "$(json_str "$out/initrd.img")" >"$work/out/guest.json"
rm -rf "$out"
mv -T "$work/out" "$out"
finish
