#!/usr/bin/env bash
# Cost of N BFD sessions against BIRD 2, side by side with BIRD's own cost in the same run.
#
#   bfd/bench/bird.sh [SESSIONS [MS [SECONDS [PEER]]]]   # as root; defaults 10, 50 ms, 60 s, ours
#
# PEER `ours` runs the `bfd` example against BIRD; PEER `bird` runs a second BIRD in its place,
# the reference for what the same machine and load allow (flaps and CPU).
#
# Two network namespaces joined by a veth: BIRD owns 192.0.2.1 … .N and runs one BFD session
# per address to ours (192.0.2.101 … 100+N) at MS / MS × 3; the `bfd` example (release build)
# runs the matching N sessions at the same timers. Prints the example's own figures (CPU
# seconds and peak RSS from /proc/self) and BIRD's CPU seconds over the same interval.
# Everything started here is stopped by pid on exit; the namespaces are deleted.
set -euo pipefail

n=${1:-10}
ms=${2:-50}
secs=${3:-60}
peer=${4:-ours}
[[ $peer == ours || $peer == bird ]] || { echo "$0: PEER is ours or bird" >&2; exit 2; }
[[ $EUID -eq 0 ]] || { echo "$0: run as root (network namespaces)" >&2; exit 1; }
((n >= 1 && n <= 99)) || { echo "$0: 1..99 sessions" >&2; exit 2; }

cd "$(dirname "$0")/../.."
cargo build --release -q -p bfd --example bfd
bin=target/release/examples/bfd

tag=bfdbench-$$
r=$tag-r
lb=$tag-lb
link=bb$$
dir=$(mktemp -d)
bird_pid=
peer_pid=
cleanup() {
    if [[ -n $bird_pid ]]; then kill "$bird_pid" 2>/dev/null || true; fi
    if [[ -n $peer_pid ]]; then kill "$peer_pid" 2>/dev/null || true; fi
    ip netns del "$r" 2>/dev/null || true
    ip netns del "$lb" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$r"
ip netns add "$lb"
ip -n "$r" link set lo up
ip -n "$lb" link set lo up
ip link add "$link-a" netns "$r" type veth peer name "$link-b" netns "$lb"
ip -n "$r" link set "$link-a" up
ip -n "$lb" link set "$link-b" up
# bird_conf ROUTER_ID FIRST_LOCAL FIRST_NEIGHBOR: one session per address pair.
bird_conf() {
    echo "router id 192.0.2.$1;"
    echo "log stderr all;"
    echo "protocol device {}"
    echo "protocol bfd {"
    echo "  debug { events };"
    echo "  interface \"*\" { min rx interval $ms ms; min tx interval $ms ms; multiplier 3; };"
    for ((i = 0; i < n; i++)); do
        echo "  neighbor 192.0.2.$(($3 + i)) local 192.0.2.$(($2 + i));"
    done
    echo "}"
}
for ((i = 1; i <= n; i++)); do
    ip -n "$r" addr add "192.0.2.$i/24" dev "$link-a"
    ip -n "$lb" addr add "192.0.2.$((100 + i))/24" dev "$link-b"
done
bird_conf 1 1 101 >"$dir/bird.conf"
bird_conf 101 101 1 >"$dir/peer.conf"

ip netns exec "$r" bird -f -c "$dir/bird.conf" -s "$dir/bird.ctl" >"$dir/bird.log" 2>&1 &
bird_pid=$!
for _ in $(seq 100); do
    birdc -s "$dir/bird.ctl" show status >/dev/null 2>&1 && break
    sleep 0.1
done

cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
bird0=$(cpu "$bird_pid")
echo "== $n sessions at $ms ms x 3 for $secs s, peer $peer, against $(bird --version 2>&1)"
if [[ $peer == ours ]]; then
    ip netns exec "$lb" "$bin" --remote 192.0.2.1 --local 192.0.2.101 --sessions "$n" \
        --min-tx "$ms" --min-rx "$ms" --multiplier 3 --seconds "$secs" >"$dir/run.txt"
    tail -n 1 "$dir/run.txt"
    [[ -z ${BENCH_KEEP:-} ]] || cp "$dir/run.txt" "$BENCH_KEEP"
else
    ip netns exec "$lb" bird -f -c "$dir/peer.conf" -s "$dir/peer.ctl" >"$dir/peer.log" 2>&1 &
    peer_pid=$!
    sleep "$secs"
    peer_cpu=$(cpu "$peer_pid")
    peer_rss=$(awk '/VmHWM/ {print $2}' "/proc/$peer_pid/status")
    [[ -z ${BENCH_KEEP:-} ]] || cp "$dir/peer.log" "$BENCH_KEEP"
    downs=$(grep -c 'from Up to Down' "$dir/peer.log" || true)
    echo "peer BIRD: downs $downs over $secs s: CPU $peer_cpu s, peak RSS $peer_rss KiB"
fi
bird1=$(cpu "$bird_pid")
echo "BIRD: CPU $(awk -v a="$bird0" -v b="$bird1" 'BEGIN { printf "%.2f", b - a }') s over the same run"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (flaps at $ms ms x 3 follow the machine's load)"
