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
# hundred of those real servers, one `ipvsadm -R` of `-e` lines) reaches lb1; the same edit
# lines fed to `ipvsadm -R` on a namespace holding the same table alone (bw-ref) is the peer.
# Between the rounds, with the load in place: the arbiter's CPU over DEATH_ROUNDS real-server
# deaths (weight 0 on the arbiter, `ipvsadm -e`) and each death's time to lb1's kernel.
# A benchmark, not a check: exit 0 once the rounds are measured, 125 when the topology could
# not be built.
set -euo pipefail
trap 'echo "bench-withdraw: line $LINENO failed: $BASH_COMMAND" >&2' ERR

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
guest_start "$1" /tmp/bench-withdraw

FINS=${BENCH_FINS:-20}
SERVICES=${BENCH_SERVICES:-5000}
SPACING=${BENCH_SPACING:-0.25}
DESTS=${BENCH_DESTS:-1}
DEATHS=${BENCH_DEATHS:-5}
ARB=bw-arb
LB=bw-lb1
REF=bw-ref
declare -A ADDR=([bw-arb]=192.0.2.10 [bw-lb1]=192.0.2.11 [bw-ref]=192.0.2.12)
VIPS=()
for i in $(seq 0 $((FINS - 1))); do VIPS+=("203.0.113.$((10 + i))"); done

t_guest0=$(date +%s%N)
log() { printf '[%6.1fs] %s\n' "$(awk -v n="$((($(date +%s%N) - t_guest0) / 1000000))" 'BEGIN { print n / 1000 }')" "$*"; }
trap stop_all EXIT

# --- Topology ------------------------------------------------------------------------------
topology "$ARB=${ADDR[$ARB]}" "$LB=${ADDR[$LB]}" "$REF=${ADDR[$REF]}"

# --- Configs: every VIP port 80 for lb1; the arbiter's kernel holds that service ----------
arb=$run/arb
mkdir -p "$arb/lbs/lb1/web"
for v in "${VIPS[@]}"; do
    printf 'virtual_server %s 80 {\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n}\n' "$v"
    printf -- '-A -t %s:80 -s rr\n-a -t %s:80 -r 198.51.100.1:80 -g -w 1\n' "$v" "$v" >>"$run/base.rules"
done >"$arb/lbs/lb1/web/vips.conf"
in_ns "$ARB" ipvsadm -R <"$run/base.rules"
# The load: SERVICES more services over the same VIPs, each with DESTS real servers
# (written by awk: a shell loop of 100,000 lines takes minutes under TCG).
printf '%s\n' "${VIPS[@]}" | awk -v services="$SERVICES" -v dests="$DESTS" -v fins="$FINS" '
    { vip[NR - 1] = $0 }
    END {
        per_vip = int((services + fins - 1) / fins)
        for (n = 0; n < services; n++) {
            v = vip[int(n / per_vip)]; p = 10000 + n % per_vip
            printf "-A -t %s:%d -s rr\n", v, p
            for (d = 1; d <= dests; d++) printf "-a -t %s:%d -r 198.51.100.%d:%d -g -w 1\n", v, p, d, p
        }
    }' >"$run/load.rules"
# The 1 % change: every hundredth load real server gets weight 2.
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

# Real-server deaths with the load in place: weight 0 for one real server on the arbiter
# (as keepalived does), timed to the weight 0 in lb1's kernel; the arbiter's CPU over them.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# (pids holds the subshells start_daemon put in the background: the daemon is their child.)
arb_pid=$(pgrep -f -- "-c $arb/config.ini --log-level debug server" | head -1)
lb_weight0() { in_ns "$LB" ipvsadm -Ln -t "$1" | awk -v rs="$2" '$2 == rs && $4 == 0 { f = 1 } END { exit !f }'; }
: >"$run/death.ms"
ticks0=$(cpu_ticks "$arb_pid")
t_cpu0=$(date +%s.%N)
grep '^-a' "$run/load.rules" >"$run/load.dests"
n_dests=$(wc -l <"$run/load.dests")
for i in $(seq 1 "$DEATHS"); do
    line=$(sed -n "$((i * 997 % n_dests + 1))p" "$run/load.dests")
    svc=$(awk '{ print $3 }' <<<"$line")
    rs=$(awk '{ print $5 }' <<<"$line")
    t0=$(date +%s.%N)
    in_ns "$ARB" ipvsadm -e -t "$svc" -r "$rs" -g -w 0
    # Polled every 100 ms: one ipvsadm -Ln of one service (each poll is a process start,
    # which under TCG takes CPU from the daemons).
    for _ in $(seq 1 300); do lb_weight0 "$svc" "$rs" && break; sleep 0.1; done
    t1=$(date +%s.%N)
    awk -v e="$t1" -v a="$t0" 'BEGIN { printf "%d\n", (e - a) * 1000 }' >>"$run/death.ms"
    in_ns "$ARB" ipvsadm -e -t "$svc" -r "$rs" -g -w 1
    sleep "0.$((RANDOM % 10))"
done
ticks1=$(cpu_ticks "$arb_pid")
t_cpu1=$(date +%s.%N)
arb_cpu=$(awk -v t="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" -v a="$t_cpu0" -v e="$t_cpu1" \
    'BEGIN { printf "%.0f %% of a core over %.1f s", 100 * t / hz / (e - a), e - a }')
dump_ms=$(clean "$logs/arbiter.log" | { grep 'IPVS dumped' || true; } | tail -5 |
    sed -E 's/.*took_ms=([0-9]+) period_ms=([0-9]+).*/\1\/\2/' | tr '\n' ' ')
report() { # report ROUND…
    local r
    printf '\nfin_announce → withdraw on the wire (lb1), %s fins %s s apart, ms:\n' "$FINS" "$SPACING"
    printf '%-8s %6s %6s %6s %6s\n' round n p50 p99 max
    for r in "$@"; do
        printf '%-8s %6s %6s %6s %6s\n' "$r" "$(wc -l <"$run/$r.ms")" "$(pct "$run/$r.ms" 50)" "$(pct "$run/$r.ms" 99)" "$(pct "$run/$r.ms" 100)"
    done
}
report idle loaded
printf 'real-server death (weight 0 on the arbiter → weight 0 in lb1'"'"'s kernel), %s services × %s, ms: n %s p50 %s max %s\n' \
    "$SERVICES" "$DESTS" "$(wc -l <"$run/death.ms")" "$(pct "$run/death.ms" 50)" "$(pct "$run/death.ms" 100)"
printf 'arbiter CPU meanwhile: %s; its last dumps (took/period ms): %s\n' "$arb_cpu" "$dump_ms"
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

# The peer: the same edit lines fed to ipvsadm -R on a namespace that holds the same table.
in_ns "$REF" ipvsadm -R <"$run/base.rules"
in_ns "$REF" ipvsadm -R <"$run/load.rules"
t_ref=$(date +%s.%N)
in_ns "$REF" ipvsadm -R <"$run/change.rules"
ref_ms=$(awk -v e="$(date +%s.%N)" -v a="$t_ref" 'BEGIN { printf "%d", (e - a) * 1000 }')

report idle loaded change
printf 'change: %s weight edits, first "IPVS mirrored" on lb1 %s ms after the ipvsadm call on the arbiter\n' \
    "$(wc -l <"$run/change.rules")" "$change_ms"
printf 'peer: ipvsadm -R of the same edit lines on a namespace holding the table alone: %s ms\n' "$ref_ms"
