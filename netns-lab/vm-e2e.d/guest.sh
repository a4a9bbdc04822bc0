#!/usr/bin/env bash
# netns-lab/vm-e2e.d/guest.sh WORK — the checks of netns-lab/vm-e2e, run inside the VM.
#
# WORK is the host directory shared with the guest (read-write): `env` from the host
# (binary, broker URL, message key, the tap's MAC, the router's update stream), logs/ for
# the daemons' logs, guest.log for this script's output (the host follows it). Configs live
# in the guest's own /tmp/e2e.
#
#   guest root:  br0 ── eth (tap to the host namespace: broker 192.0.2.1:5672,
#                 │                                     gobgpd 192.0.2.1:179)
#                 ├── veth ── e2e-arb  192.0.2.10  ipvs-sync server (ipvs = true)
#                 ├── veth ── e2e-lb1  192.0.2.11  ipvs-sync client (ipvs = true, vip0)
#                 └── veth ── e2e-lb2  192.0.2.12  ipvs-sync client (ipvs = true, vip0)
#
# Prints PASS/FAIL per check, then `N passed, M failed`; exit 0 when none failed, 1 when
# one did, 125 when the topology could not be built. Stops the daemons it started by pid.
set -euo pipefail

work=$1
date +%s.%N >"$work/t_guest"
# shellcheck source=/dev/null
source "$work/env"
logs=$work/logs
run=/tmp/e2e
mkdir -p "$run" "$logs"
# The host follows this file (the VM console is not a reliable channel for long output).
exec >>"$work/guest.log" 2>&1
# The binary in guest memory: every daemon and CLI start would read it over 9p otherwise.
cp "$BIN" "$run/ipvs-sync"
BIN=$run/ipvs-sync

ARB=e2e-arb
LBS=(e2e-lb1 e2e-lb2)
declare -A ADDR=([e2e-arb]=192.0.2.10 [e2e-lb1]=192.0.2.11 [e2e-lb2]=192.0.2.12)
declare -A HOST=([e2e-lb1]=lb1 [e2e-lb2]=lb2)
VIP4=203.0.113.10
VIP6=2001:db8:f00::10
MAPPED="$VIP4 $VIP6"
UNMAPPED=203.0.113.99
OPERATOR_VIP=203.0.113.200

t_guest0=$(date +%s%N)
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
log() { printf '[%6.1fs] %s\n' "$(awk -v n="$(ms "$t_guest0")" 'BEGIN { print n / 1000 }')" "$*"; }

passed=0
failed=0
pass() {
    passed=$((passed + 1))
    printf 'PASS  %s\n' "$*"
}
fail() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$*"
}
check() { # check NAME DETAIL -- CMD...: PASS when CMD succeeds
    local name=$1 detail=$2
    shift 3
    if "$@"; then pass "$name${detail:+ ($detail)}"; else fail "$name${detail:+ ($detail)}"; fi
}

in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# Polls CMD every 0.5 s for at most SECS seconds; true once it succeeds. (Not faster: under
# TCG every poll costs the daemons CPU.)
wait_until() {
    local secs=$1
    shift
    local end=$(($(date +%s) + secs))
    while :; do
        if "$@"; then return 0; fi
        [[ $(date +%s) -lt $end ]] || return 1
        sleep 0.5
    done
}

pids=()
stop_all() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    pids=()
}
trap stop_all EXIT

setup_fail() {
    echo "vm-e2e guest: $*" >&2
    exit 125
}

# --- Topology ------------------------------------------------------------------------------
log "guest $(uname -r): building the namespaces"
eth=$(ip -o link | awk -F': ' -v mac="$GUEST_MAC" 'index($0, mac) { split($2, a, "@"); print a[1]; exit }')
[[ -n $eth ]] || setup_fail "no interface with MAC $GUEST_MAC (is the tap device attached?)"
ip link add br0 type bridge
ip link set "$eth" master br0
ip addr add 192.0.2.2/24 dev br0
ip link set "$eth" up
ip link set br0 up
for ns in "$ARB" "${LBS[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "v-$ns" type veth peer name eth0 netns "$ns"
    ip link set "v-$ns" master br0
    ip link set "v-$ns" up
    ip -n "$ns" addr add "${ADDR[$ns]}/24" dev eth0
    ip -n "$ns" link set eth0 up
done
broker_open() { in_ns "$1" timeout 3 bash -c "exec 3<>/dev/tcp/$BROKER_ADDR/$BROKER_PORT" 2>/dev/null; }
for ns in "$ARB" "${LBS[@]}"; do
    wait_until 30 broker_open "$ns" || setup_fail "$ns cannot reach the broker at $BROKER_ADDR:$BROKER_PORT"
done
log "every namespace reaches the broker at $BROKER_ADDR:$BROKER_PORT"

# --- The arbiter's IPVS tree -----------------------------------------------------------------
# Two VIPs (IPv4, IPv6) mapped to both balancers, TCP/UDP services with DR, NAT and tunnel
# real servers, persistence; fwmark services (v4, v6); and a VIP no balancer is mapped to.
in_ns "$ARB" ipvsadm -R <<EOF
-A -t $VIP4:80 -s wrr
-a -t $VIP4:80 -r 203.0.113.101:80 -g -w 10
-a -t $VIP4:80 -r 203.0.113.102:80 -g -w 20
-a -t $VIP4:80 -r 203.0.113.103:80 -g -w 0
-A -u $VIP4:53 -s rr
-a -u $VIP4:53 -r 203.0.113.101:5353 -m -w 1
-a -u $VIP4:53 -r 203.0.113.102:5353 -m -w 1
-A -t $VIP4:443 -s sh -p 300
-a -t $VIP4:443 -r 203.0.113.103:443 -i -w 5
-a -t $VIP4:443 -r 203.0.113.104:443 -i -w 5
-A -t [$VIP6]:443 -s wlc
-a -t [$VIP6]:443 -r [2001:db8:5::1]:443 -g -w 1
-a -t [$VIP6]:443 -r [2001:db8:5::2]:443 -g -w 2
-A -u [$VIP6]:53 -s rr
-a -u [$VIP6]:53 -r [2001:db8:5::1]:53 -m -w 1
-A -f 7 -s sh
-a -f 7 -r 203.0.113.105:0 -g -w 1
-A -f 8 -6 -s rr
-a -f 8 -6 -r [2001:db8:5::3]:0 -g -w 1
-A -t $UNMAPPED:80 -s rr
-a -t $UNMAPPED:80 -r 203.0.113.106:80 -g -w 1
EOF
log "arbiter tree: $(in_ns "$ARB" ipvsadm -Sn | grep -c '^-A') services, $(in_ns "$ARB" ipvsadm -Sn | grep -c '^-a') real servers"

# What an operator put on the balancers by hand before the daemons ran: services of a VIP
# outside the mapping (must survive every reconcile), and on lb1 a stale service of a mapped
# VIP (the mirror owns mapped VIPs: it must go).
in_ns e2e-lb1 ipvsadm -A -t "$OPERATOR_VIP:8080" -s rr
in_ns e2e-lb1 ipvsadm -a -t "$OPERATOR_VIP:8080" -r 203.0.113.150:8080 -m -w 1
in_ns e2e-lb1 ipvsadm -A -t "$VIP4:8443" -s rr
in_ns e2e-lb2 ipvsadm -A -u "$OPERATOR_VIP:53" -s rr
in_ns e2e-lb2 ipvsadm -A -f 9 -s rr
operator_rules() { in_ns "$1" ipvsadm -Sn | awk -v v="$OPERATOR_VIP" 'index($3, v ":") == 1 || ($2 == "-f" && $3 == 9)' | sort; }
declare -A OPERATOR_BEFORE
for ns in "${LBS[@]}"; do OPERATOR_BEFORE[$ns]=$(operator_rules "$ns"); done

# --- Configs -------------------------------------------------------------------------------
secret() { # secret DIR: a node key of its own in DIR/secret.ini; prints its public key
    rm -f "$1/secret.ini"
    "$BIN" keygen --out "$1/secret.ini"
}
arb=$run/arb
mkdir -p "$arb/desc"
for ns in "${LBS[@]}"; do
    d=$arb/lbs/${HOST[$ns]}/web
    mkdir -p "$d"
    {
        echo "! keepalived-shaped: the services ${HOST[$ns]} serves"
        for vs in "$VIP4 80 TCP" "$VIP4 53 UDP" "$VIP4 443 TCP" "$VIP6 443 TCP" "$VIP6 53 UDP"; do
            read -r a p proto <<<"$vs"
            cat <<EOF
virtual_server $a $p {
    delay_loop 5
    lb_algo wrr
    lb_kind DR
    protocol $proto
    quorum_up "$BIN -c $arb/config.ini quorum up $a,b-150,$p"
    quorum_down "$BIN -c $arb/config.ini quorum down $a,b-150,$p"
    real_server 203.0.113.101 $p {
        weight 1
    }
}
EOF
        done
    } >"$d/vips.conf"
done
mkdir -p "$arb/balancers"
arbiter_pub=$(secret "$arb")
cat >"$arb/config.ini" <<EOF
[main]
amqp_server = $AMQP_URL
hostname = arbiter
state_dir = $arb/state
ipvs = true
service_mapping_wildcard = $arb/lbs/*/*/*.conf
service_mapping_config = $arb/svc_mapping.json
vip_description_filepath = $arb/desc/keepalived-{vip}-desc.json
vips_description_update_interval = 0.2
heartbeat_interval = 1
consumer_alive_ttl = 10
control_socket = $arb/control.sock
state_dir = $arb/state

[server]
quorum_socket = $arb/quorum.sock
startup_hold = 0
balancer_keys_dir = $arb/balancers
EOF
for ns in "${LBS[@]}"; do
    d=$run/${HOST[$ns]}
    mkdir -p "$d"
    secret "$d" >"$arb/balancers/${HOST[$ns]}.pub"
    cat >"$d/config.ini" <<EOF
[main]
amqp_server = $AMQP_URL
hostname = ${HOST[$ns]}
arbiter_name = arbiter
arbiter_public_key = $arbiter_pub
state_dir = $d/state
ipvs = true
heartbeat_interval = 1
consumer_alive_ttl = 10
control_socket = $d/control.sock
state_dir = $d/state

[bgp]
local_as = 65000
router_id = ${ADDR[$ns]}
hold_time = 9
connect_retry = 1
; IPv6 VIPs ride the IPv4 session: their next hop must be given.
next_hop_v6 = 2001:db8::${ADDR[$ns]##*.}

[bgp.peer.r1]
address = $ROUTER_ADDR
remote_as = 65000

[announce]
interface = vip0
EOF
done

# --- Daemons -------------------------------------------------------------------------------
start_daemon() { # start_daemon NS CONFIG LOG MODE
    in_ns "$1" "$BIN" -c "$2" --log-level debug "$4" >>"$3" 2>&1 &
    pids+=($!)
}
daemon_pid=()
t_daemons=$(date +%s%N)
start_daemon "$ARB" "$arb/config.ini" "$logs/arbiter.log" server
daemon_pid+=("${pids[-1]}")
wait_until 60 test -S "$arb/quorum.sock" || {
    tail -n 20 "$logs/arbiter.log" >&2
    setup_fail "the arbiter did not open $arb/quorum.sock in 60 s"
}
log "arbiter up ($(ms "$t_daemons") ms)"
t_clients=$(date +%s.%N)
for ns in "${LBS[@]}"; do
    start_daemon "$ns" "$run/${HOST[$ns]}/config.ini" "$logs/${HOST[$ns]}.log" client
    daemon_pid+=("${pids[-1]}")
done

# --- Helpers for the checks -----------------------------------------------------------------
# `ipvsadm -Sn`-style rules on stdin → the rules of address services of the VIPs given
# (space separated), plus fwmark services when FW=1; sorted.
only_vips() { # only_vips "VIPS" FW
    awk -v vips="$1" -v fw="$2" '
        BEGIN { n = split(vips, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
        $2 == "-f" { if (fw == 1) print; next }
        {
            s = $3
            if (substr(s, 1, 1) == "[") { addr = substr(s, 2, index(s, "]") - 2) }
            else { addr = s; sub(/:[0-9]+$/, "", addr) }
            if (addr in want) print
        }' | sort
}
rules_of() { in_ns "$1" ipvsadm -Sn | only_vips "$2" "$3"; }
mirrors() { # mirrors NS: the balancer's rules for the mapped VIPs equal the arbiter's
    local a b
    a=$(rules_of "$ARB" "$MAPPED" 0)
    b=$(rules_of "$1" "$MAPPED" 0)
    [[ -n $a && $a == "$b" ]]
}
all_mirror() {
    local ns
    for ns in "${LBS[@]}"; do mirrors "$ns" || return 1; done
}
show_diff() { # on failure: what differs
    local ns=$1
    diff <(rules_of "$ARB" "$MAPPED" 0) <(rules_of "$ns" "$MAPPED" 0) | sed 's/^/      /' || true
}
# The balancer has no rule of the arbiter's fwmark services / of the unmapped VIP.
no_fwmark_7_8() { ! in_ns "$1" ipvsadm -Sn | awk '$2 == "-f" && ($3 == 7 || $3 == 8)' | grep -q .; }
no_unmapped() { ! in_ns "$1" ipvsadm -Sn | only_vips "$UNMAPPED" 0 | grep -q .; }
dump_agrees() { # `ipvs-sync ipvs dump` and `ipvsadm -Sn` print the same rules
    local a b
    a=$(in_ns "$1" ipvsadm -Sn | sort)
    b=$(in_ns "$1" "$BIN" ipvs dump | sort)
    [[ -n $a && $a == "$b" ]] || {
        diff <(echo "$a") <(echo "$b") | sed 's/^/      /'
        return 1
    }
}
operator_survives() { [[ "$(operator_rules "$1")" == "${OPERATOR_BEFORE[$1]}" && -n "${OPERATOR_BEFORE[$1]}" ]]; }
has_vip() { in_ns "$1" ip -br addr show dev vip0 2>/dev/null | grep -qw -- "$2"; }
no_vip() { ! has_vip "$@"; }
all_have_vip() {
    local ns
    for ns in "${LBS[@]}"; do has_vip "$ns" "$1" || return 1; done
}
none_has_vip() {
    local ns
    for ns in "${LBS[@]}"; do has_vip "$ns" "$1" && return 1; done
    return 0
}
is_dummy() { in_ns "$1" ip -d link show vip0 2>/dev/null | grep -qw dummy; }
quorum() { # quorum up|down ARG
    in_ns "$ARB" "$BIN" -c "$arb/config.ini" --log-level warn quorum "$1" "$2"
}
alive() { kill -0 "$1" 2>/dev/null; }

# The router's view: the host runs `gobgp monitor adj-in -j` against its gobgpd into
# $ROUTER_STREAM (one JSON array of paths per update, withdrawals flagged); the gobgp CLI
# itself takes ~10 s a call under TCG. The sessions never reset here, so the last update per
# (prefix, neighbor) is what the router holds.
session_up() { # the balancer's speaker reached Established with the router
    sed 's/\x1b\[[0-9;]*m//g' "$logs/${HOST[$1]}.log" | grep -q "BGP session established peer=r1"
}
all_sessions_up() {
    local ns
    for ns in "${LBS[@]}"; do session_up "$ns" || return 1; done
}
rib() { # rib PREFIX: one line per path the router holds, "NEIGHBOR NEXT_HOP LOCAL_PREF"
    jq -rs --arg p "$1" '
        reduce (.[][] | select(.nlri.prefix == $p)) as $r ({}; .[$r["neighbor-ip"]] = $r)
        | .[] | select(.withdrawal != true)
        | [.["neighbor-ip"], (.attrs[] | select(.type == 3 or .type == 14) | .nexthop),
           (.attrs[] | select(.type == 5) | .value)] | map(tostring) | join(" ")' \
        "$ROUTER_STREAM" 2>/dev/null
}
paths_with_lp() { # paths_with_lp PREFIX N LP: exactly N paths, each with LOCAL_PREF LP
    local out
    out=$(rib "$1")
    [[ $(grep -c . <<<"$out") -eq $2 ]] || return 1
    [[ $2 -eq 0 ]] && return 0
    ! grep -qv " $3\$" <<<"$out"
}

# Daemon-side latency from the logs (same guest clock for every namespace): ms from epoch
# T0 to the last (with `first`: the first) line matching PATTERN in LOG logged between T0
# and epoch T1.
log_ms() { # log_ms T0 T1 LOG PATTERN [first]
    local t0=$1 t1=$2 f=$3 pat=$4 mode=${5:-last} line ts e best=
    while IFS= read -r line; do
        ts=${line%%Z *}
        e=$(date -u -d "${ts}Z" +%s.%N 2>/dev/null) || continue
        if awk -v e="$e" -v a="$t0" -v b="$t1" 'BEGIN { exit !(e >= a && e <= b) }'; then
            best=$e
            [[ $mode == first ]] && break
        fi
    done < <(sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E -- "$pat")
    [[ -n $best ]] || { echo "?"; return 0; }
    awk -v e="$best" -v a="$t0" 'BEGIN { printf "%d", (e - a) * 1000 }'
}
applied_ms() { # applied_ms T0 T1 PATTERN [first]: "lb1 X ms, lb2 Y ms"
    local ns out=
    for ns in "${LBS[@]}"; do
        out+="${out:+, }${HOST[$ns]} $(log_ms "$1" "$2" "$logs/${HOST[$ns]}.log" "$3" "${4:-last}") ms"
    done
    echo "$out"
}

# --- Checks --------------------------------------------------------------------------------
echo
log "checks"
if wait_until 90 all_mirror; then
    pass "initial tree on lb1 and lb2 equals the arbiter's for $VIP4 and $VIP6 (mirrored: $(applied_ms "$t_clients" "$(date +%s.%N)" 'IPVS mirrored' first) after the clients' start)"
else
    fail "initial tree on lb1 and lb2 equals the arbiter's for $VIP4 and $VIP6"
    for ns in "${LBS[@]}"; do show_diff "$ns"; done
fi
if wait_until 60 all_sessions_up; then
    pass "BGP sessions lb1, lb2 → router (gobgpd on the host) Established"
else
    fail "BGP sessions lb1, lb2 → router (gobgpd on the host) Established"
fi
for ns in "${LBS[@]}"; do
    check "${HOST[$ns]}: no service of the unmapped VIP $UNMAPPED" "" -- no_unmapped "$ns"
    check "${HOST[$ns]}: the arbiter's fwmark services 7, 8 not mirrored (tree has VIPs outside the mapping)" "" -- no_fwmark_7_8 "$ns"
    check "${HOST[$ns]}: operator's services outside the mapping survive the first reconcile" "" -- operator_survives "$ns"
done
stale_gone() { ! in_ns e2e-lb1 ipvsadm -Sn | grep -q -- "-t $VIP4:8443 "; }
check "lb1: stale service $VIP4:8443 of a mapped VIP removed" "" -- stale_gone
for ns in "$ARB" "${LBS[@]}"; do
    check "$ns: 'ipvs-sync ipvs dump' equals 'ipvsadm -Sn'" "" -- dump_agrees "$ns"
done

# Tree changes on the arbiter, each made with one `ipvsadm -R`. The polling here is slow
# under TCG (every poll runs several programs), so the times printed come from the daemons'
# own logs (one guest clock): when the arbiter saw the change (it re-reads its tree every
# second) and when each client had applied it, counted from the ipvsadm call.
tree_change() { # tree_change NAME MARKER: rules on stdin; MARKER NS holds once NS has it
    local name=$1 marker=$2 t0 now ns
    t0=$(date +%s.%N)
    in_ns "$ARB" ipvsadm -R
    markers() {
        for ns in "${LBS[@]}"; do "$marker" "$ns" || return 1; done
    }
    if wait_until 30 markers && wait_until 10 all_mirror; then
        now=$(date +%s.%N)
        pass "$name (arbiter $(log_ms "$t0" "$now" "$logs/arbiter.log" 'IPVS tree changed') ms, applied: $(applied_ms "$t0" "$now" 'IPVS mirrored'))"
    else
        fail "$name"
        for ns in "${LBS[@]}"; do show_diff "$ns"; done
    fi
}
weight_edited() {
    in_ns "$1" ipvsadm -Sn | grep -qF -e "-a -t $VIP4:80 -r 203.0.113.101:80 -g -w 55" &&
        in_ns "$1" ipvsadm -Sn | grep -qF -e "-a -t [$VIP6]:443 -r [2001:db8:5::9]:443 -g -w 3"
}
tree_change "weight edit + new real server reach lb1 and lb2 kernels" weight_edited <<EOF
-e -t $VIP4:80 -r 203.0.113.101:80 -g -w 55
-a -t [$VIP6]:443 -r [2001:db8:5::9]:443 -g -w 3
EOF
udp_gone() { ! in_ns "$1" ipvsadm -Sn | grep -qF -e "-u $VIP4:53 "; }
tree_change "service udp $VIP4:53 removed on the arbiter is removed on lb1 and lb2" udp_gone <<EOF
-D -u $VIP4:53
EOF
added() { in_ns "$1" ipvsadm -Sn | grep -qF -e "-a -t [$VIP6]:8080 -r [2001:db8:5::4]:8080 -m -w 7"; }
tree_change "service tcp [$VIP6]:8080 added on the arbiter reaches lb1 and lb2" added <<EOF
-A -t [$VIP6]:8080 -s mh
-a -t [$VIP6]:8080 -r [2001:db8:5::4]:8080 -m -w 7
EOF

# Quorum: every virtual server of a VIP up → the VIP on vip0 of both balancers.
ports4=(80 53 443)
ports6=(443 53)
t=$(date +%s%N)
ok=1
for p in "${ports4[@]}"; do
    t_last4=$(date +%s.%N)
    quorum up "$VIP4,b-150,$p" || ok=0
done
for p in "${ports6[@]}"; do
    t_last6=$(date +%s.%N)
    quorum up "$VIP6,b-150,$p" || ok=0
done
t_q=$(ms "$t")
check "quorum up for every port of $VIP4 and $VIP6 exits 0" "${#ports4[@]}+${#ports6[@]} calls, $t_q ms" -- test "$ok" -eq 1
t=$(date +%s%N)
if wait_until 30 all_have_vip "$VIP4/32" && wait_until 30 all_have_vip "$VIP6/128"; then
    pass "quorum up: $VIP4/32 and $VIP6/128 on vip0 of lb1 and lb2 (announced, from the last quorum call: $VIP4 $(applied_ms "$t_last4" "$(date +%s.%N)" "announcing vip=$VIP4 "); $VIP6 $(applied_ms "$t_last6" "$(date +%s.%N)" "announcing vip=$VIP6 "))"
else
    fail "quorum up: $VIP4/32 and $VIP6/128 on vip0 of lb1 and lb2"
    for ns in "${LBS[@]}"; do echo "      $ns: $(in_ns "$ns" ip -br addr show dev vip0 2>&1)"; done
fi
for ns in "${LBS[@]}"; do
    check "${HOST[$ns]}: vip0 is a dummy interface the client created" "" -- is_dummy "$ns"
done
check "after the announce: trees still equal the arbiter's" "" -- all_mirror
if wait_until 30 paths_with_lp "$VIP4/32" 2 150 && wait_until 30 paths_with_lp "$VIP6/128" 2 150; then
    pass "router: $VIP4/32 and $VIP6/128 from lb1 and lb2 with LOCAL_PREF 150"
else
    fail "router: $VIP4/32 and $VIP6/128 from lb1 and lb2 with LOCAL_PREF 150"
    { rib "$VIP4/32"; rib "$VIP6/128"; } | sed 's/^/      /'
fi

# Quorum down on one port of the IPv4 VIP → withdrawn and removed; the IPv6 VIP stays.
t0=$(date +%s.%N)
check "quorum down $VIP4,b-150,80 exits 0" "" -- quorum down "$VIP4,b-150,80"
if wait_until 30 none_has_vip "$VIP4/32"; then
    pass "quorum down: $VIP4/32 gone from vip0 of lb1 and lb2 (removed: $(applied_ms "$t0" "$(date +%s.%N)" "VIP address removed.*vip=$VIP4\$"))"
else
    fail "quorum down: $VIP4/32 gone from vip0 of lb1 and lb2"
fi
if wait_until 30 paths_with_lp "$VIP4/32" 0 0; then
    pass "router: $VIP4/32 withdrawn by lb1 and lb2"
else
    fail "router: $VIP4/32 withdrawn by lb1 and lb2"
    rib "$VIP4/32" | sed 's/^/      /'
fi
withdraw_first() { # the client withdrew the route before it removed the address
    local f=$logs/${HOST[$1]}.log w r
    w=$(sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -n "withdrawing vip=$VIP4\$" | tail -n 1 | cut -d: -f1)
    r=$(sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -n "VIP address removed.*vip=$VIP4\$" | tail -n 1 | cut -d: -f1)
    [[ -n $w && -n $r && $w -lt $r ]]
}
for ns in "${LBS[@]}"; do
    check "${HOST[$ns]}: BGP withdraw logged before the address removal" "" -- withdraw_first "$ns"
done
check "quorum down of $VIP4 leaves $VIP6/128 on both balancers" "" -- all_have_vip "$VIP6/128"
check "quorum down of $VIP4 leaves $VIP6/128 at the router" "" -- paths_with_lp "$VIP6/128" 2 150

# After every reconcile above: the operator's services are still there, nothing crashed.
for ns in "${LBS[@]}"; do
    check "${HOST[$ns]}: operator's services outside the mapping survive every reconcile" "" -- operator_survives "$ns"
    check "${HOST[$ns]}: 'ipvs-sync ipvs dump' equals 'ipvsadm -Sn' at the end" "" -- dump_agrees "$ns"
done
for i in "${!daemon_pid[@]}"; do
    name=$([[ $i -eq 0 ]] && echo arbiter || echo "${HOST[${LBS[$((i - 1))]}]}")
    check "$name daemon still running" "" -- alive "${daemon_pid[$i]}"
done
panics() { ! grep -qiE 'panicked|RUST_BACKTRACE' "$logs"/*.log; }
check "no panic in the daemons' logs" "" -- panics

stop_all
echo
log "done"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
