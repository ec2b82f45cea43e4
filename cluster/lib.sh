# Shared paths and helpers for the local control plane scripts (sourced, not executed).
#
#   VMSNAP_CACHE          binaries, by version    (default ~/.cache/vmsnap)
#   VMSNAP_STATE          state root              (default ~/.local/state/vmsnap)
#   VMSNAP_CLUSTER_STATE  one cluster instance    (default $VMSNAP_STATE/cluster); point it
#                         elsewhere to run a second, independent cluster (tests do).

VMSNAP_CACHE="${VMSNAP_CACHE:-$HOME/.cache/vmsnap}"
VMSNAP_STATE="${VMSNAP_STATE:-$HOME/.local/state/vmsnap}"
CLUSTER_STATE="${VMSNAP_CLUSTER_STATE:-$VMSNAP_STATE/cluster}"
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

CERTS="$CLUSTER_STATE/certs"
LOGS="$CLUSTER_STATE/logs"
RUN="$CLUSTER_STATE/run"
KUBECONFIG_PATH="$CLUSTER_STATE/kubeconfig"
CLUSTER_JSON="$CLUSTER_STATE/cluster.json"

# etcd data lives on tmpfs (fsync-free speed); one directory per instance, named from a hash
# of the state path so two instances never share it.
etcd_data_dir() {
  local base=/dev/shm
  [[ -d $base && -w $base ]] || base="$CLUSTER_STATE"
  echo "$base/vmsnap-etcd-$(printf '%s' "$CLUSTER_STATE" | sha256sum | cut -c1-12)"
}

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

# Prints the pid recorded in $RUN/<name>.pid ("<pid> <binary>") when that process is alive and
# still runs the recorded binary: a recycled pid must never be mistaken for ours, nor killed.
pid_of() {
  local name=$1 pid bin exe
  [[ -f $RUN/$name.pid ]] || return 1
  read -r pid bin < "$RUN/$name.pid" || true
  [[ $pid =~ ^[0-9]+$ && -n $bin ]] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [[ ${exe% (deleted)} == "$(readlink -f "$bin")" ]] || return 1
  echo "$pid"
}

# Plain-HTTP GET over bash's /dev/tcp (etcd's client port speaks HTTP without TLS here).
http_get_ok() {
  local port=$1 path=$2 resp
  resp="$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'GET $path HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && cat <&3" 2>/dev/null)" || return 1
  [[ $resp == "HTTP/1."?" 200"* ]]
}

port_free() {
  ! timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# A free loopback port from the kernel's ephemeral range; not reserved, so the caller checks
# that the process bound it and retries otherwise.
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    if port_free "$p"; then echo "$p"; return 0; fi
  done
  die "no free loopback port found"
}

json_str() { # minimal JSON string escaping for paths and URLs
  local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"
}

# Serialises fetching/building into one cache directory across instances (a user's `up` and a
# test run on a fresh machine would otherwise build the same binary twice). Uses fd 8.
cache_lock() {
  mkdir -p "$1"
  exec 8>"$1/.lock"
  flock 8
}

# Stops daemons recorded by launch (TERM to all at once, then KILL what still runs after 10 s)
# and forgets them.
stop_pid() { # $@ = names
  local name pid pids=() deadline
  for name in "$@"; do
    if pid="$(pid_of "$name")"; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  deadline=$(( SECONDS + 10 ))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
  done
  for name in "$@"; do
    pid="$(pid_of "$name")" && kill -KILL "$pid" 2>/dev/null
    rm -f "$RUN/$name.pid"
  done
  return 0
}

# Launches a daemon detached from this script (own session, stdio to a log, lock fd closed)
# and records "<pid> <binary>" so later runs can tell it from a recycled pid.
launch() { # $1 = name, $2 = binary, rest = args
  local name=$1; shift
  launch_via "$name" "$1" "$@"
}

# Like launch, for a command that ends by exec'ing the daemon's binary (a wrapper that sets up
# something first): the pid stays the same, the recorded binary is the daemon's.
launch_via() { # $1 = name, $2 = the daemon's binary, rest = command
  local name=$1 bin=$2; shift 2
  : > "$LOGS/$name.log"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
  local pid=$! exe want
  echo "$pid $bin" > "$RUN/$name.pid"
  # Until the forked shell (or a wrapper) has exec'd the binary, pid_of does not recognise it;
  # callers check pid_of right away to tell a crashed daemon, so wait for the exec (at most 5 s;
  # a daemon that died shows up in the caller's check).
  want="$(readlink -f "$bin")"
  for _ in $(seq 1 100); do
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || break
    [[ ${exe% (deleted)} == "$want" ]] && break
    sleep 0.05
  done
}
