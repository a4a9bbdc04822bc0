# shellcheck shell=bash disable=SC2034  # (variables are used by the scripts that source this)
# Shared by netns-lab/lab, netns-lab/test and the scripts that drive the lab (demo,
# bench-scale): where things live and small process helpers. The address plan is
# labkit's (netns-lab/labkit/src/bridge.rs); `lab` sources it from run/topology.sh.
# Sourced, never run.

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(dirname "$LAB_DIR")
# Generated files, pids and logs; git-ignored. LAB_RUN moves it (tests use a temp dir).
RUN=${LAB_RUN:-$LAB_DIR/run}
LOGS=$RUN/logs
# Namespace names are PREFIX+node, so the lab never collides with other namespaces.
PREFIX=${LAB_PREFIX:-lab-}
SWITCH=${PREFIX}sw

die() {
  echo "lab: $*" >&2
  exit 1
}

need_root() {
  [[ $EUID -eq 0 ]] || die "needs root (namespaces, veth, BGP port 179); try: sudo $0 $*"
}

# Runs a command inside a node's namespace.
in_ns() {
  local node=$1
  shift
  ip netns exec "$PREFIX$node" "$@"
}

ns_exists() {
  [[ -e /run/netns/$1 ]]
}

# The gobgp CLI aimed at a router's API socket (no namespace needed: it is a unix socket).
gobgp_of() {
  local router=$1
  shift
  gobgp --target "unix://$RUN/$router/api.sock" "$@"
}

# True if the pid in FILE is alive and its command line contains WHAT (guards against
# a recycled pid after a reboot of the machine or a stale file).
pid_alive() {
  local file=$1 what=$2 pid
  [[ -s $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$what"
}

# Starts a long-running command in a node's namespace, detached from this shell's
# session (so Ctrl-C on the caller does not take it down), output appended to LOG,
# pid written to PIDFILE. `setsid` and `ip netns exec` both exec in place, so the pid
# recorded is the daemon's own.
start_bg() {
  local node=$1 pidfile=$2 log=$3
  shift 3
  setsid ip netns exec "$PREFIX$node" "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

# Stops the process in PIDFILE (if it is WHAT): SIGTERM, then SIGKILL after 5 s.
stop_pidfile() {
  local file=$1 what=$2 pid i
  if pid_alive "$file" "$what"; then
    pid=$(<"$file")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# Polls CMD… every 0.1 s until it succeeds or SECONDS pass; returns its last status.
wait_for() {
  local secs=$1 i
  shift
  for ((i = 0; i < secs * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  "$@" >/dev/null 2>&1
}

# Where the ipvs-sync binary is: IPVS_SYNC, else the workspace's build (LAB_PROFILE: debug).
ipvs_sync_path() {
  echo "${IPVS_SYNC:-${CARGO_TARGET_DIR:-$REPO/target}/${LAB_PROFILE:-debug}/ipvs-sync}"
}

# The ipvs-sync binary, which must exist.
ipvs_sync_bin() {
  local bin
  bin=$(ipvs_sync_path)
  [[ -x $bin ]] || die "no ipvs-sync binary at $bin (cargo build, or set IPVS_SYNC)"
  echo "$bin"
}
