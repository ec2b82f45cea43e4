#!/usr/bin/env bash
# Builds the sandbox ("pause") image for the local node without a registry: Kubernetes's own
# pause.c (from the k8s.io/kubernetes module in the Go module cache, the source the upstream
# image is built from) compiled static, in a scratch image, saved as an OCI archive.
#
# Prints two lines: the image name, then the archive path. Cached by content (source, compiler
# flags, this script) under $VMSNAP_CACHE/images, so a second run is instant.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/images.sh"

PAUSE_VERSION=3.10.1   # the pause TAG of Kubernetes v1.34
K8S_VERSION="${VMSNAP_K8S_VERSION:-v1.34.4}"
IMAGE="localhost/vmsnap/pause:$PAUSE_VERSION"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
src=''
if [[ -x $GO ]]; then
  src="$("$GO" env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
fi
if [[ ! -f $src ]]; then
  # Same behaviour as upstream's pause.c: sit in pause(), reap children, exit 0 on INT/TERM.
  src="$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-pause.XXXXXX")/pause.c"
  cat > "$src" <<'C'
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void sigdown(int s) { psignal(s, "Shutting down, got signal"); exit(0); }
static void sigreap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) ; }
int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i)
    if (!strcasecmp(argv[i], "-v")) { printf("pause.c vmsnap\n"); return 0; }
  if (sigaction(SIGINT, &(struct sigaction){.sa_handler = sigdown}, NULL) < 0) return 1;
  if (sigaction(SIGTERM, &(struct sigaction){.sa_handler = sigdown}, NULL) < 0) return 2;
  if (sigaction(SIGCHLD, &(struct sigaction){.sa_handler = sigreap, .sa_flags = SA_NOCLDSTOP}, NULL) < 0) return 3;
  for (;;) pause();
}
C
fi
CFLAGS=(-Os -Wall -static "-DVERSION=v$PAUSE_VERSION-vmsnap")

key="$( { cat "$src" "${BASH_SOURCE[0]}"; echo "${CFLAGS[*]} $IMAGE"; } | sha256sum | cut -c1-16)"
archive="$(images_cache_dir)/pause-$key.oci.tar"
if [[ ! -f $archive ]]; then
  cache_lock "$IMAGES_CACHE/pause"
  if [[ ! -f $archive ]]; then
    log "building $IMAGE from $src"
    work="$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-pause-build.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    gcc "${CFLAGS[@]}" -o "$work/pause" "$src"
    strip "$work/pause"
    ctr_name="$(images_buildah from scratch)"
    images_buildah copy "$ctr_name" "$work/pause" /pause >/dev/null
    images_buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr_name"
    images_buildah commit -q "$ctr_name" "$IMAGE" >/dev/null
    images_buildah rm "$ctr_name" >/dev/null
    images_buildah push -q "$IMAGE" "oci-archive:$work/pause.oci.tar:$IMAGE"
    mv -f "$work/pause.oci.tar" "$archive"
  fi
fi
echo "$IMAGE"
echo "$archive"
