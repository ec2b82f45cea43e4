#!/usr/bin/env bash
# Builds vmsnap's images with buildah, without any registry, and prints one line per image,
# "<name> <oci-archive>" (progress goes to stderr):
#   localhost/vmsnap/vmsnap:<appVersion>    the operator and node agent (Dockerfile target runtime)
#   localhost/vmsnap/vm:<appVersion>        a VM pod: QEMU under the launcher (target vm)
#   localhost/vmsnap/vm-guest:<appVersion>  the vm image plus the test guest (kernel, initramfs and
#                                           guest.json under /guest), for VM pods that check memory
# The bases are built first (base.sh). Everything is cached by content: the repository files the
# Dockerfile copies (tracked or new, not ignored), the Dockerfile, the bases and this script, so
# an unchanged tree costs seconds. The build context holds exactly the hashed files.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$VMSNAP_ROOT"

bash "$IMAGES_DIR/ensure-tools.sh"
full_image="$(bash "$IMAGES_DIR/base.sh" full)" && full_image=${full_image%% *}
slim_image="$(bash "$IMAGES_DIR/base.sh" slim)" && slim_image=${slim_image%% *}
label_of() { bh inspect --type image --format '{{index .OCIv1.Config.Labels "io.vmsnap.key"}}' "$1"; }

app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' helm/vmsnap/Chart.yaml)"
[[ -n $app_version ]] || die "no appVersion in helm/vmsnap/Chart.yaml"

# The sources of the Dockerfile's COPY lines that read the build context (not --from a stage).
copy_sources() {
  awk '$1 == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' Dockerfile | sort -u
}
mapfile -t sources < <(copy_sources)
[[ ${#sources[@]} -gt 0 ]] || die "found no COPY sources in the Dockerfile"
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- "${sources[@]}" |
  while IFS= read -r f; do [[ -f $f ]] && echo "$f"; done | LC_ALL=C sort -u)

key="$({
  echo "$app_version"
  label_of "$full_image"; label_of "$slim_image"
  cat Dockerfile "$IMAGES_DIR/build.sh"
  stat -c '%a %n' "${files[@]}" | sed 's/^[0-7]*\([0-7]\{3\}\) /\1 /'
  sha256sum "${files[@]}"
} | hash16)"

# Made on first use, inside ensure_image's subshell; named here so that this shell removes it.
ctx="$IMAGE_CACHE/.context.$$"
trap 'rm -rf "$ctx"' EXIT

build_target() {
  local name=$1 key=$2
  if [[ ! -d $ctx ]]; then
    mkdir -m 700 "$ctx"
    cp --parents -p "${files[@]}" "$ctx/"
    cp Dockerfile "$ctx/Dockerfile"
  fi
  # This machine's npm cache serves `npm ci` (tarballs are looked up by the lockfile's integrity):
  # a cold build downloads nothing npm already has, and the image content is the same.
  local npm=()
  if [[ -d $HOME/.npm/_cacache ]]; then
    printf 'prefer-offline=true\n' >"$IMAGE_CACHE/.build-npmrc"
    npm=(-v "$HOME/.npm/_cacache:/root/.npm/_cacache" -v "$IMAGE_CACHE/.build-npmrc:/root/.npmrc:ro")
  fi
  # chroot isolation: no nested runtime is needed; host network: npm and apt reach their package
  # registries exactly as this machine does; --layers: a changed source file rebuilds from its COPY on;
  # --force-rm: a failed step leaves no working container behind.
  bh bud --isolation chroot --network host --layers --force-rm --pull=never "${npm[@]}" \
    --build-arg NODE_IMAGE="$full_image" --build-arg NODE_SLIM_IMAGE="$slim_image" \
    --target "$target" -f "$ctx/Dockerfile" -t "$name" "$ctx" >&2
  # Labelled afterwards: with --layers, bud may hand back a cached final image that carries the
  # label of an earlier build instead of its --label.
  local c
  c="$(bh from --quiet --pull=never "$name")"
  bh config --label io.vmsnap.key="$key" "$c"
  bh commit --quiet --rm "$c" "$name" >/dev/null
}

image_lock app
target=runtime
runtime_archive="$(ensure_image "localhost/vmsnap/vmsnap:$app_version" "$key" build_target)"
target=vm
vm_archive="$(ensure_image "localhost/vmsnap/vm:$app_version" "$key" build_target)"

guest_json="$(bash test/guest/build.sh | tail -n 1)"
guest_dir="$(dirname "$guest_json")"
guest_key="$({ echo "$key"; cd "$guest_dir" && sha256sum vmlinuz initrd.img; } | hash16)"

# The guest's files under /guest, with a guest.json that names them where the pod sees them.
build_guest() {
  local name=$1 key=$2 c
  c="$(bh from --quiet --pull=never "localhost/vmsnap/vm:$app_version")"
  bh copy --quiet --chown 0:0 "$c" "$guest_dir/vmlinuz" "$guest_dir/initrd.img" /guest/ >/dev/null
  printf '{"kernel": "/guest/vmlinuz", "initrd": "/guest/initrd.img"}\n' >"$IMAGE_CACHE/.guest.json.$$"
  bh copy --quiet --chown 0:0 "$c" "$IMAGE_CACHE/.guest.json.$$" /guest/guest.json >/dev/null
  rm -f "$IMAGE_CACHE/.guest.json.$$"
  bh config --label io.vmsnap.key="$key" "$c"
  bh commit --quiet --rm "$c" "$name" >/dev/null
}
guest_archive="$(ensure_image "localhost/vmsnap/vm-guest:$app_version" "$guest_key" build_guest)"

echo "localhost/vmsnap/vmsnap:$app_version $runtime_archive"
echo "localhost/vmsnap/vm:$app_version $vm_archive"
echo "localhost/vmsnap/vm-guest:$app_version $guest_archive"
