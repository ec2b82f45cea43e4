# Shared paths and helpers for the image scripts (sourced, not executed).
#
#   VMSNAP_CACHE         cache root (default ~/.cache/vmsnap); images live under $VMSNAP_CACHE/images
#   VMSNAP_IMAGE_DRIVER  buildah storage driver: overlay or vfs (default: overlay when it works here)
#
# The images are kept in a buildah store of their own (not the machine's default one): other tools
# on the same machine may use the default store with another storage driver, and a store cannot mix
# drivers. The OCI archives these scripts print are the hand-off; the store is only a build cache.

# Errors inside $(...) must stop the script too (a failed bootstrap must never be committed).
shopt -s inherit_errexit

IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VMSNAP_ROOT="$(cd "$IMAGES_DIR/../.." && pwd)"
VMSNAP_CACHE="${VMSNAP_CACHE:-$HOME/.cache/vmsnap}"
IMAGE_CACHE="$VMSNAP_CACHE/images"

log() { echo "images: $*" >&2; }
die() { echo "images: $*" >&2; exit 1; }

hash16() { sha256sum | cut -c1-16; }

# One lock per cache directory: concurrent builds (two test runs) wait instead of racing.
image_lock() {
  mkdir -p "$IMAGE_CACHE"
  exec 8>"$IMAGE_CACHE/.lock-$1"
  flock 8
}

# The storage driver, probed once per machine: overlay needs a kernel and a backing filesystem
# that allow overlay mounts; vfs always works but copies every layer.
image_driver() {
  if [[ -n ${VMSNAP_IMAGE_DRIVER:-} ]]; then echo "$VMSNAP_IMAGE_DRIVER"; return; fi
  local memo="$IMAGE_CACHE/.driver" probe
  if [[ -s $memo ]]; then cat "$memo"; return; fi
  mkdir -p "$IMAGE_CACHE"
  probe="$(mktemp -d "$IMAGE_CACHE/.probe.XXXXXX")"
  mkdir -p "$probe"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" 2>/dev/null; then
    umount "$probe/merged"
    echo overlay >"$memo"
  else
    echo vfs >"$memo"
  fi
  rm -rf "$probe"
  cat "$memo"
}

# buildah on vmsnap's own store (one store per driver, so switching drivers never breaks a store).
bh() {
  local driver
  driver="$(image_driver)"
  buildah --root "$IMAGE_CACHE/storage-$driver" --runroot "/run/vmsnap-images-$driver" \
    --storage-driver "$driver" "$@"
}

# True when NAME exists in the store and carries label io.vmsnap.key=KEY.
image_has_key() {
  local name=$1 key=$2 got
  got="$(bh inspect --type image --format '{{index .OCIv1.Config.Labels "io.vmsnap.key"}}' "$name" 2>/dev/null)" || return 1
  [[ $got == "$key" ]]
}

# Makes NAME (labelled KEY) present in the store and its OCI archive present in the cache, building
# it with BUILD_FN only when neither exists; prints the archive path. An archive left by an earlier
# run is loaded back into the store instead of rebuilding (the store may have been wiped).
ensure_image() {
  local name=$1 key=$2 build_fn=$3 stem archive old
  # <repo>_<tag>-<key>.oci.tar, or <repo>_<key>.oci.tar when the tag is the key.
  stem="$(echo "${name%:*}" | sed 's|^localhost/||; s|/|_|g')_"
  [[ ${name##*:} == "$key" ]] || stem+="${name##*:}-"
  archive="$IMAGE_CACHE/archives/$stem$key.oci.tar"
  mkdir -p "$IMAGE_CACHE/archives"
  # touch: an archive in use counts as new when old ones are removed (below).
  if image_has_key "$name" "$key"; then
    if [[ -s $archive ]]; then touch "$archive"; echo "$archive"; return; fi
  elif [[ -s $archive ]]; then
    log "loading $name from $archive"
    local id
    id="$(bh pull --quiet "oci-archive:$archive" | tail -n 1)" && bh tag "$id" "$name" || true
    if image_has_key "$name" "$key"; then touch "$archive"; echo "$archive"; return; fi
  fi
  if ! image_has_key "$name" "$key"; then
    log "building $name (key $key)"
    "$build_fn" "$name" "$key"
    image_has_key "$name" "$key" || die "$name was built without label io.vmsnap.key=$key"
  fi
  rm -f "$archive.tmp"
  bh push --quiet "$name" "oci-archive:$archive.tmp:$name" >&2
  mv -f "$archive.tmp" "$archive"
  # Archives of earlier inputs would only fill the disk; the three newest per image stay, because
  # another checkout on this machine (another branch, a parallel test) may be using its own.
  local n=0
  while IFS= read -r old; do
    [[ ${old##*/} =~ ^${stem//./\\.}[0-9a-f]{16}\.oci\.tar$ ]] || continue
    n=$((n + 1))
    if [[ $n -gt 3 && $old != "$archive" ]]; then rm -f "$old"; fi
  done < <(ls -t "$IMAGE_CACHE/archives/$stem"*.oci.tar)
  echo "$archive"
}
