#!/usr/bin/env bash
# libvirt 11 as the peer in the vmsnap benchmark (bench/libvirt.ts).
#
#   libvirt-setup.sh install        install libvirtd + the QEMU driver + virsh 11.x from
#                                   bookworm-backports (and tini), only when missing (idempotent)
#   libvirt-setup.sh start PRIV     start a private libvirtd (system mode, as root, no systemd)
#   libvirt-setup.sh stop PRIV      stop it (destroying its domains first)
#
# The daemon is private: it runs in its own mount namespace with PRIV/etc,
# PRIV/lib, PRIV/cache, PRIV/log and PRIV/run bind-mounted over /etc/libvirt,
# /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /run/libvirt, so
# the machine's libvirt configuration and state are neither read nor changed.
# Its socket is PRIV/sock/libvirt-sock: connect with
#   virsh -c 'qemu:///system?socket=PRIV/sock/libvirt-sock' ...
# The only thing left behind on the machine is the installed packages (and an
# empty /run/libvirt mount point, created if missing, removed by `stop`).
set -euo pipefail

as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

installed_ok() {
  command -v virsh >/dev/null 2>&1 || return 1
  command -v tini >/dev/null 2>&1 || return 1
  [[ -x /usr/sbin/libvirtd ]] || return 1
  compgen -G '/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so' >/dev/null || return 1
  local v
  v="$(virsh --version 2>/dev/null || true)"
  [[ "$v" == 11.* ]] || return 1
}

cmd_install() {
  if installed_ok; then
    echo "libvirt $(virsh --version) already installed"
    return 0
  fi
  # Only the libvirt packages come from backports (pkg/suite), not everything
  # they pull in: `apt-get install -t bookworm-backports` would also move
  # systemd to its backports version through systemd-container.
  local s=bookworm-backports
  local pkgs=(
    "libvirt-daemon-driver-qemu/$s" "libvirt-clients/$s" "libvirt-daemon/$s"
    "libvirt-common/$s" "libvirt0/$s" "libvirt-daemon-common/$s" "libvirt-daemon-log/$s"
    tini
  )
  local log
  log="$(mktemp -t vmsnap-libvirt-install.XXXXXX)"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$log" 2>&1; then
    as_root apt-get update -qq >>"$log" 2>&1 || true
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      rm -f "$log"
      echo "libvirt-setup: apt-get install failed" >&2
      return 1
    fi
  fi
  rm -f "$log"
  installed_ok || { echo "libvirt-setup: libvirt 11 still missing after install (virsh: $(virsh --version 2>&1 || true))" >&2; return 1; }
  echo "libvirt $(virsh --version) installed"
}

uri() { echo "qemu:///system?socket=$1/sock/libvirt-sock"; }

cmd_start() {
  local priv="$1"
  [[ $EUID -eq 0 ]] || { echo "libvirt-setup: start needs root" >&2; return 1; }
  mkdir -p "$priv"/{etc/qemu,lib,cache,log/qemu,run,sock}
  priv="$(cd "$priv" && pwd)"
  if [[ -f "$priv/libvirtd.pid" ]] && kill -0 "$(cat "$priv/libvirtd.pid")" 2>/dev/null; then
    echo "libvirt-setup: a daemon is already running for $priv (pid $(cat "$priv/libvirtd.pid"))" >&2
    return 1
  fi
  cat >"$priv/etc/libvirtd.conf" <<EOF
# private libvirtd for the vmsnap benchmark
unix_sock_dir = "$priv/sock"
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:$priv/log/libvirtd.log"
EOF
  # QEMU as root, no security driver, no cgroups or per-VM /dev namespace
  # (no systemd here), QEMU's stdio to a file (no virtlogd).
  cat >"$priv/etc/qemu.conf" <<EOF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
  : >"$priv/etc/libvirt.conf"
  mkdir -p /run/libvirt
  [[ -f "$priv/run-libvirt-created" ]] || [[ -n "$(ls -A /run/libvirt)" ]] || touch "$priv/run-libvirt-created"
  rm -f "$priv/libvirtd.pid" "$priv/sock/libvirt-sock"
  # libvirt double-forks QEMU, so QEMU's parent is the nearest subreaper, or
  # PID 1. After SIGTERM, `virsh save` waits until kill(pid, 0) fails, i.e.
  # until QEMU's zombie is reaped; this sandbox's PID 1 reaps orphans only
  # every ~1-2 s (a host's systemd does at once), which would add that to
  # every virsh save. `tini -s` (a subreaper that reaps on SIGCHLD) runs the
  # daemon, as systemd would. VMSNAP_LIBVIRT_REAPER=0 leaves it out.
  local reaper=(tini -s --)
  [[ "${VMSNAP_LIBVIRT_REAPER:-1}" == 0 ]] && reaper=()
  # Each mount only inside the daemon's namespace; exec keeps one pid.
  setsid unshare --mount --propagation private sh -c '
    p="$1"; shift
    mount --bind "$p/etc" /etc/libvirt
    mount --bind "$p/lib" /var/lib/libvirt
    mount --bind "$p/cache" /var/cache/libvirt
    mount --bind "$p/log" /var/log/libvirt
    mount --bind "$p/run" /run/libvirt
    exec "$@" /usr/sbin/libvirtd -f "$p/etc/libvirtd.conf" -p "$p/libvirtd.pid"
  ' sh "$priv" "${reaper[@]}" </dev/null >"$priv/libvirtd.out" 2>&1 &
  local pid=$!
  echo "$pid" >"$priv/libvirtd.pid.launcher"
  local i
  for i in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "libvirt-setup: libvirtd exited during start-up:" >&2
      tail -n 20 "$priv/libvirtd.out" "$priv/log/libvirtd.log" >&2 2>/dev/null || true
      return 1
    fi
    if [[ -S "$priv/sock/libvirt-sock" ]] && virsh -q -c "$(uri "$priv")" version >/dev/null 2>&1; then
      echo "libvirtd pid $(cat "$priv/libvirtd.pid" 2>/dev/null), launcher pid $pid, uri $(uri "$priv")"
      return 0
    fi
    sleep 0.1
  done
  echo "libvirt-setup: libvirtd did not answer within 30 s" >&2
  kill "$pid" 2>/dev/null || true
  return 1
}

cmd_stop() {
  local priv="$1"
  [[ -d "$priv" ]] || return 0
  priv="$(cd "$priv" && pwd)"
  local u pid
  u="$(uri "$priv")"
  if [[ -S "$priv/sock/libvirt-sock" ]]; then
    for d in $(virsh -q -c "$u" list --name 2>/dev/null || true); do
      virsh -q -c "$u" destroy "$d" >/dev/null 2>&1 || true
    done
  fi
  # Any QEMU the daemon left behind (pid files in its private /run/libvirt/qemu).
  for f in "$priv"/run/qemu/*.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && grep -q qemu "/proc/$pid/comm" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  # The daemon first (tini, the launcher, exits with it), then the launcher.
  for f in "$priv/libvirtd.pid" "$priv/libvirtd.pid.launcher"; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [[ -f "$priv/run-libvirt-created" ]]; then
    rmdir /run/libvirt 2>/dev/null || true
    rm -f "$priv/run-libvirt-created"
  fi
  echo "libvirtd stopped"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:?usage: $0 start PRIVDIR}" ;;
  stop) cmd_stop "${2:?usage: $0 stop PRIVDIR}" ;;
  uri) uri "$(cd "${2:?usage: $0 uri PRIVDIR}" && pwd)" ;;
  *) echo "usage: $0 install | start PRIVDIR | stop PRIVDIR | uri PRIVDIR" >&2; exit 2 ;;
esac
