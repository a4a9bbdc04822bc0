#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# netns-lab/vm-e2e.d/bench-withdraw.sh WORK — the guest half of netns-lab/vm-bench-withdraw:
# fin_announce → withdraw latency on one balancer, idle and while it reconciles a tree of
# 5,000 services arriving as the fins are sent. Run inside the VM by netns-lab/vm-e2e
# (VM_E2E_GUEST); WORK is the shared directory (env, logs/, guest.log).
#
#   guest root:  br0 ── eth (tap to the host namespace: broker, gobgpd)
#                 ├── veth ── bw-arb  192.0.2.10  ipvs-sync server (ipvs = true)
#                 └── veth ── bw-lb1  192.0.2.11  ipvs-sync client (ipvs = true, vip0)
#
# Each round announces FINS VIPs, then sends one `quorum down` (a fin_announce) per VIP,
# SPACING seconds apart, without waiting for the one before. A fin's latency runs from just
# before its `quorum down` to the client's "withdraw on the wire" log line for that VIP (one
# guest clock for every namespace). The loaded round first loads the arbiter's kernel with
# SERVICES services of the same VIPs (one `ipvsadm -R`) and sends its fins once the arbiter
# has logged the change, so they meet the client's reconcile. Prints both rounds' p50/p99
# side by side. A third round sends its fins while a 1 % change (the weight of one in a
# hundred of those services, one `ipvsadm -R` of `-e` lines) reaches lb1. A benchmark, not a
# check: exit 0 once the rounds are measured, 125 when the topology could not be built.
set -euo pipefail

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
guest_start "$1" /tmp/bench-withdraw

FINS=${BENCH_FINS:-20}
SERVICES=${BENCH_SERVICES:-5000}
SPACING=${BENCH_SPACING:-0.25}
ARB=bw-arb
LB=bw-lb1
declare -A ADDR=([bw-arb]=192.0.2.10 [bw-lb1]=192.0.2.11)
VIPS=()
for i in $(seq 0 $((FINS - 1))); do VIPS+=("203.0.113.$((10 + i))"); done

t_guest0=$(date +%s%N)
log() { printf '[%6.1fs] %s\n' "$(awk -v n="$((($(date +%s%N) - t_guest0) / 1000000))" 'BEGIN { print n / 1000 }')" "$*"; }
trap stop_all EXIT

# --- Topology ------------------------------------------------------------------------------
topology "$ARB=${ADDR[$ARB]}" "$LB=${ADDR[$LB]}"

# --- Configs: every VIP port 80 for lb1; the arbiter's kernel holds that service ----------
arb=$run/arb
mkdir -p "$arb/lbs/lb1/web"
for v in "${VIPS[@]}"; do
    printf 'virtual_server %s 80 {\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n}\n' "$v"
    printf -- '-A -t %s:80 -s rr\n-a -t %s:80 -r 198.51.100.1:80 -g -w 1\n' "$v" "$v" >>"$run/base.rules"
done >"$arb/lbs/lb1/web/vips.conf"
in_ns "$ARB" ipvsadm -R <"$run/base.rules"
# The load: SERVICES more services over the same VIPs, each with one real server.
per_vip=$(((SERVICES + FINS - 1) / FINS))
n=0
for v in "${VIPS[@]}"; do
    for p in $(seq 10000 $((10000 + per_vip - 1))); do
        ((n < SERVICES)) || break
        printf -- '-A -t %s:%d -s rr\n-a -t %s:%d -r 198.51.100.1:%d -g -w 1\n' "$v" "$p" "$v" "$p" "$p"
        n=$((n + 1))
    done
done >"$run/load.rules"
# The 1 % change: every hundredth load service gets weight 2.
awk '/^-a / && (++n % 100) == 0 { sub(/-w 1$/, "-w 2"); sub(/^-a /, "-e "); print }' \
    "$run/load.rules" >"$run/change.rules"
arbiter_config "$arb"
client_config "$run/lb1" lb1 "${ADDR[$LB]}"

# --- Daemons -------------------------------------------------------------------------------
start_daemon "$ARB" "$arb/config.ini" "$logs/arbiter.log" server
wait_until 60 test -S "$arb/quorum.sock" || setup_fail "the arbiter did not open its quorum socket"
start_daemon "$LB" "$run/lb1/config.ini" "$logs/lb1.log" client
clean() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
lines() { clean "$1" | wc -l; }
# Whether LOG has at least N lines matching PATTERN after its first FROM lines.
logged() { # logged LOG FROM PATTERN N
    [[ $(clean "$1" | tail -n +"$(($2 + 1))" | grep -c -- "$3" || true) -ge $4 ]]
}
wait_until 120 logged "$logs/lb1.log" 0 "BGP session established" 1 ||
    setup_fail "lb1's BGP session did not come up"
log "arbiter and lb1 up, BGP established; $FINS VIPs, load $SERVICES services"

quorum() { in_ns "$ARB" "$BIN" -c "$arb/config.ini" --log-level warn quorum "$1" "$2"; }
# Epoch seconds of the first line matching PATTERN in lb1's log at or after epoch T0.
first_at() { # first_at T0 PATTERN
    clean "$logs/lb1.log" | grep -E -- "$2" | while IFS= read -r line; do
        e=$(date -u -d "${line%%Z *}Z" +%s.%N 2>/dev/null) || continue
        if awk -v e="$e" -v a="$1" 'BEGIN { exit !(e >= a) }'; then
            echo "$e"
            break
        fi
    done
}

announce_all() {
    local v from
    from=$(lines "$logs/lb1.log")
    for v in "${VIPS[@]}"; do quorum up "$v,b-100,80"; done
    wait_until 300 logged "$logs/lb1.log" "$from" "announcing vip=" "$FINS" ||
        setup_fail "not every VIP announced"
}

# One round: a fin per VIP, SPACING apart; latencies (ms) into $run/ROUND.ms.
round() { # round NAME
    local name=$1 v t0 from handlers=()
    : >"$run/$name.t0"
    from=$(lines "$logs/lb1.log")
    for v in "${VIPS[@]}"; do
        t0=$(date +%s.%N)
        quorum down "$v,b-100,80" &
        handlers+=($!)
        echo "$v $t0" >>"$run/$name.t0"
        sleep "$SPACING"
    done
    wait "${handlers[@]}" || log "$name: a quorum down failed"
    wait_until 300 logged "$logs/lb1.log" "$from" "withdraw on the wire vip=" "$FINS" ||
        log "$name: not every withdraw logged within 300 s"
    : >"$run/$name.ms"
    while read -r v t0; do
        e=$(first_at "$t0" "withdraw on the wire vip=$v\$")
        [[ -n $e ]] && awk -v e="$e" -v a="$t0" 'BEGIN { printf "%d\n", (e - a) * 1000 }' >>"$run/$name.ms"
    done <"$run/$name.t0"
}
pct() { # pct FILE P: the P-th percentile (nearest rank) of the numbers in FILE
    sort -n "$1" | awk -v p="$2" '{ a[NR] = $1 } END { if (NR == 0) { print "?"; exit } r = int((p * NR + 99) / 100); if (r < 1) r = 1; print a[r] }'
}

announce_all
log "idle round"
round idle
announce_all
log "loaded round: $SERVICES services into the arbiter's kernel"
from=$(lines "$logs/arbiter.log")
t_load=$(date +%s.%N)
in_ns "$ARB" ipvsadm -R <"$run/load.rules"
wait_until 120 logged "$logs/arbiter.log" "$from" "IPVS tree changed" 1 || log "the arbiter did not log the change"
round loaded
lb_services() { [[ $(in_ns "$LB" ipvsadm -Sn | grep -c '^-A') -ge $1 ]]; }
wait_until 600 lb_services $((SERVICES + FINS)) || log "lb1 does not hold every service"
mirrored=$(first_at "$t_load" "IPVS mirrored")
mirror_ms=$([[ -n $mirrored ]] && awk -v e="$mirrored" -v a="$t_load" 'BEGIN { printf "%d", (e - a) * 1000 }' || echo "?")
lb_services_now=$(in_ns "$LB" ipvsadm -Sn | grep -c '^-A')
report() { # report ROUND…
    local r
    printf '\nfin_announce → withdraw on the wire (lb1), %s fins %s s apart, ms:\n' "$FINS" "$SPACING"
    printf '%-8s %6s %6s %6s %6s\n' round n p50 p99 max
    for r in "$@"; do
        printf '%-8s %6s %6s %6s %6s\n' "$r" "$(wc -l <"$run/$r.ms")" "$(pct "$run/$r.ms" 50)" "$(pct "$run/$r.ms" 99)" "$(pct "$run/$r.ms" 100)"
    done
}
report idle loaded
printf 'loaded: %s services in lb1 kernel %s ms after the ipvsadm call (first "IPVS mirrored" line)\n' \
    "$lb_services_now" "$mirror_ms"

# The 1 % round is skipped (figures above stand) when the VIPs do not come back in time.
announce_all() { # soft: says so and returns 1
    local v from
    from=$(lines "$logs/lb1.log")
    for v in "${VIPS[@]}"; do quorum up "$v,b-100,80"; done
    wait_until 300 logged "$logs/lb1.log" "$from" "announcing vip=" "$FINS" || {
        log "not every VIP announced again: no 1 % round"
        return 1
    }
}
announce_all || exit 0
log "1% round: $(wc -l <"$run/change.rules") weight edits into the arbiter's kernel"
from=$(lines "$logs/arbiter.log")
t_change=$(date +%s.%N)
in_ns "$ARB" ipvsadm -R <"$run/change.rules"
wait_until 120 logged "$logs/arbiter.log" "$from" "IPVS tree changed" 1 || log "the arbiter did not log the change"
round change
lb_weights() { [[ $(in_ns "$LB" ipvsadm -Sn | grep -c -- '-w 2$') -ge $1 ]]; }
wait_until 600 lb_weights "$(wc -l <"$run/change.rules")" || log "lb1 does not hold every edited weight"
changed=$(first_at "$t_change" "IPVS mirrored")
change_ms=$([[ -n $changed ]] && awk -v e="$changed" -v a="$t_change" 'BEGIN { printf "%d", (e - a) * 1000 }' || echo "?")

report idle loaded change
printf 'change: %s weight edits, first "IPVS mirrored" on lb1 %s ms after the ipvsadm call\n' \
    "$(wc -l <"$run/change.rules")" "$change_ms"
