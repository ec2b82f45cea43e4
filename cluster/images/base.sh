#!/usr/bin/env bash
# Builds a stand-in for the official Node image from Debian packages and this machine's Node, for
# machines that reach no image registry; prints "<name> <archive>".
#
#   base.sh full   localhost/vmsnap/node:20-bookworm       (node-gyp can build addons: python3,
#                                                            make, g++, headers in /usr/local)
#   base.sh slim   localhost/vmsnap/node:20-bookworm-slim  (Node and npm only)
#
# The root filesystem is a Debian bookworm `mmdebstrap` from this machine's own apt source; Node is
# this machine's /usr/bin/node with its npm, placed where the official image has them
# (/usr/local/bin, /usr/local/lib/node_modules, /usr/local/include/node), so the repository's
# Dockerfile builds the same way on both. Cached by content: Node and npm versions, package list,
# apt source, CA bundle and this script.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

variant=${1:-}
case $variant in
  full)
    name=localhost/vmsnap/node:20-bookworm
    # What `node-gyp rebuild` needs; the official image has far more (buildpack-deps).
    packages=(libstdc++6 ca-certificates python3 make g++)
    ;;
  slim)
    name=localhost/vmsnap/node:20-bookworm-slim
    packages=(libstdc++6)
    ;;
  *) die "usage: base.sh full|slim" ;;
esac

node_bin=/usr/bin/node
npm_dir=/usr/lib/node_modules/npm
node_headers=/usr/include/node
ca_bundle=/etc/ssl/certs/ca-certificates.crt
host_sources=/etc/apt/sources.list.d/debian.sources
[[ -x $node_bin && -f $npm_dir/bin/npm-cli.js ]] || die "need Node 20 with npm at $node_bin and $npm_dir"
[[ $variant == slim || -f $node_headers/node.h ]] || die "need Node's headers in $node_headers"
[[ -f $host_sources ]] || die "need this machine's Debian apt source in $host_sources"
node_version="$("$node_bin" --version)"
[[ $node_version == v20.* ]] || die "$node_bin is $node_version; the images stand in for Node 20"

# The official image lists bookworm and bookworm-updates only; the Dockerfile adds backports itself,
# so the stand-in leaves it out too and that step runs the same way here.
sources="$(sed -E 's/^(Suites:.*) bookworm-backports/\1/' "$host_sources")"
# This machine's mirror serves a dated snapshot whose Release files are past their Valid-Until;
# apt inside the image (the Dockerfile's apt-get update) must accept them as the host's apt does.
aptopts=('Acquire::Check-Valid-Until "false"' 'Acquire::Check-Date "false"')

key="$({
  echo "$variant $node_version"
  "$node_bin" "$npm_dir/bin/npm-cli.js" --version
  printf '%s\n' "${packages[@]}" "${aptopts[@]}" "$sources"
  cat "$ca_bundle" "$IMAGES_DIR/base.sh"
} | hash16)"

build_base() {
  local name=$1 key=$2 tmp ctr
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (cluster/images/ensure-tools.sh installs it)"
  tmp=$base_tmp
  rm -rf "$tmp" && mkdir -m 700 "$tmp"
  printf '%s\n' "$sources" >"$tmp/debian.sources"
  local hooks=(
    # The source under the name the official image uses (the Dockerfile edits that file).
    --customize-hook='rm -f "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*'
    --customize-hook="cp $tmp/debian.sources \"\$1\"/etc/apt/sources.list.d/debian.sources"
    --customize-hook="mkdir -p \"\$1\"/usr/local/bin \"\$1\"/usr/local/lib/node_modules \"\$1\"/usr/local/share/vmsnap"
    --customize-hook="cp -a $node_bin \"\$1\"/usr/local/bin/node"
    --customize-hook="cp -a $npm_dir \"\$1\"/usr/local/lib/node_modules/npm"
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1"/usr/local/bin/npm'
    --customize-hook='ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1"/usr/local/bin/npx'
    # See NODE_EXTRA_CA_CERTS below. Not under /etc/ssl/certs: installing ca-certificates in a
    # later stage regenerates that directory's bundle.
    --customize-hook="cp $ca_bundle \"\$1\"/usr/local/share/vmsnap/build-host-ca.crt"
  )
  if [[ $variant == full ]]; then
    # The Dockerfile builds the addon with --nodedir=/usr/local, as the official image needs.
    hooks+=(--customize-hook="mkdir -p \"\$1\"/usr/local/include && cp -a $node_headers \"\$1\"/usr/local/include/node")
  fi
  local opts=() o
  for o in "${aptopts[@]}"; do opts+=(--aptopt="$o"); done
  # A mirror that drops a request fails the whole bootstrap (apt's --error-on=any): try again.
  local attempt
  for attempt in 1 2 3; do
    log "mmdebstrap bookworm ($variant: ${packages[*]}), attempt $attempt"
    printf '%s\n' "$sources" | mmdebstrap --quiet --variant=minbase --skip=output/dev \
      --include="$(IFS=,; echo "${packages[*]}")" "${opts[@]}" "${hooks[@]}" \
      bookworm "$tmp/rootfs.tar" - >&2 && break
    [[ $attempt -lt 3 ]] || die "mmdebstrap failed $attempt times"
    sleep 5
  done

  ctr="$(bh from --quiet scratch)"
  bh add --quiet "$ctr" "$tmp/rootfs.tar" / >/dev/null
  # The images trust what the build machine trusts: npm inside a build reaches the registry through
  # this machine's TLS-intercepting CA, which is in the host bundle and not in Node's own list.
  bh config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env NODE_VERSION="${node_version#v}" \
    --env NODE_EXTRA_CA_CERTS=/usr/local/share/vmsnap/build-host-ca.crt \
    --cmd node --label io.vmsnap.key="$key" \
    --label org.opencontainers.image.description="Debian bookworm with Node $node_version, built locally by vmsnap (stand-in for the official node image)" \
    "$ctr"
  bh commit --quiet --rm "$ctr" "$name" >/dev/null
}

# The bootstrap's scratch directory; named here so that this shell removes it (the build runs in
# ensure_image's subshell).
base_tmp="$IMAGE_CACHE/.base.$$"
trap 'rm -rf "$base_tmp"' EXIT
image_lock "base-$variant"
archive="$(ensure_image "$name" "$key" build_base)"
echo "$name $archive"
