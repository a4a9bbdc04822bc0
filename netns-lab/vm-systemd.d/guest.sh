#!/usr/bin/env bash
# netns-lab/vm-systemd.d/guest.sh WORK — the checks of netns-lab/vm-systemd, in a guest booted
# with systemd as init: the package installed with dpkg, both daemons started by systemctl
# from the installed units, with the units' sandbox.
#
#   guest root:  br0 ── eth (tap to the host namespace: broker 192.0.2.1:5672,
#                 │                                     gobgpd 192.0.2.1 / 2001:db8::1)
#                 │   192.0.2.11, 2001:db8::11: ipvs-sync-client.service, the installed unit
#                 └── veth ── netns vmsd-arb 192.0.2.10: ipvs-sync-server.service, the
#                     installed unit plus a drop-in that only puts it in that namespace and
#                     binds the arbiter's own /etc/ipvs-sync and /etc/keepalived over the
#                     guest's (one guest plays both hosts)
#
# WORK is the host directory shared read-write: `env` from the host, the package, guest.log
# (this script's output, which the host follows). Prints PASS/FAIL per check, then
# `N passed, M failed`; exit 0 when none failed, 1 when one did, 125 when the guest could
# not be set up.
set -euo pipefail

work=$1
# shellcheck source=/dev/null
source "$work/env"
exec >>"$work/guest.log" 2>&1

VIP=203.0.113.10
LB=lb1.example.net
ARB_NS=vmsd-arb
arb=/run/vmsd/arb # the arbiter's /etc/ipvs-sync and /etc/keepalived
client_cfg=/etc/ipvs-sync/config.ini

t0=$(date +%s)
log() { printf '[%5ds] %s\n' "$(($(date +%s) - t0))" "$*"; }
passed=0
failed=0
check() { # check NAME CMD...: PASS when CMD succeeds
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        printf 'PASS  %s\n' "$name"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s\n' "$name"
    fi
}
setup_fail() {
    echo "vm-systemd guest: $*"
    exit 125
}
# Polls CMD every second for at most SECS seconds (not faster: TCG is slow enough).
wait_until() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [[ $(date +%s) -lt $end ]] || return 1
        sleep 1
    done
}
unit_is() { [[ $(systemctl show -p "$2" --value "$1") == "$3" ]]; }
main_pid() { systemctl show -p MainPID --value "$1"; }
status_json() { ipvs-sync -c "$client_cfg" status --json 2>/dev/null; }
peer_is() { # peer_is NAME STATE: the balancer's BGP session with NAME is in STATE
    [[ $(status_json | jq -r --arg p "$1" '.peers[] | select(.name == $p) | .state') == "$2" ]]
}
vip_is() { [[ $(status_json | jq -r --arg v "$VIP" '.vips[] | select(.vip == $v) | .state') == "$1" ]]; }
# The router's view: the host streams `gobgp monitor adj-in -j` into $ROUTER_STREAM.
router_has() { # router_has PREFIX NEIGHBOR: the last update of PREFIX from NEIGHBOR is no withdrawal
    jq -es --arg p "$1" --arg n "$2" \
        '[.[][] | select(.nlri.prefix == $p and .["neighbor-ip"] == $n)] | last | .withdrawal != true' \
        "$ROUTER_STREAM" >/dev/null 2>&1
}
journal_count() { # journal_count UNIT PATTERN: lines of UNIT's journal matching PATTERN
    journalctl -q -o cat -u "$1" | sed 's/\x1b\[[0-9;]*m//g' | grep -c -- "$2" || true
}
journal_has() { [[ $(journal_count "$@") -gt 0 ]]; }
not() { ! "$@"; }
all() { # all CMD1 -- CMD2 -- ...: every command succeeds
    local cmd=()
    while [[ $# -gt 0 ]]; do
        if [[ $1 == -- ]]; then
            "${cmd[@]}" || return 1
            cmd=()
        else
            cmd+=("$1")
        fi
        shift
    done
    [[ ${#cmd[@]} -eq 0 ]] || "${cmd[@]}"
}
loaded() { grep -q "^$1 " /proc/modules; }
link_exists() { ip link show "$1" >/dev/null 2>&1; }
read_only_for() { # read_only_for UNIT PATH: creating PATH in UNIT's mounts fails with EROFS
    local err
    err=$(nsenter -t "$(main_pid "$1")" -m -- touch "$2" 2>&1) && return 1
    [[ $err == *"Read-only file system"* ]]
}
writable_for() { nsenter -t "$(main_pid "$1")" -m -- touch "$2"; }
# --- systemd -----------------------------------------------------------------------------------
[[ $(ps -p 1 -o comm=) == systemd ]] || setup_fail "PID 1 is $(ps -p 1 -o comm=), not systemd"
log "guest $(uname -r), systemd $(systemctl --version | head -n 1 | cut -d' ' -f2) as PID 1 ($(systemd-detect-virt))"
# The host's policy-rc.d (exit 101, a container's) would keep deb-systemd-invoke from acting;
# this guest is a real systemd machine. The man-db trigger would run mandb for minutes under TCG.
rm -f /usr/sbin/policy-rc.d /var/lib/man-db/auto-update

# --- install -----------------------------------------------------------------------------------
log "dpkg -i $(basename "$DEB")"
dpkg -i "$DEB" >"$work/dpkg-install.log" 2>&1 || setup_fail "dpkg -i failed: $(tail -n 5 "$work/dpkg-install.log")"
check "install: /etc/ipvs-sync created, mode 0700, root" \
    test "$(stat -c %a:%U /etc/ipvs-sync)" = 700:root
check "install: both units known to systemd, neither enabled nor started" \
    all unit_is ipvs-sync-client UnitFileState disabled -- unit_is ipvs-sync-server UnitFileState disabled \
    -- unit_is ipvs-sync-client ActiveState inactive -- unit_is ipvs-sync-server ActiveState inactive
verify=$(systemd-analyze verify ipvs-sync-client.service ipvs-sync-server.service 2>&1 || echo "exit $?")
check "install: systemd-analyze verify of both units is clean${verify:+ ($verify)}" test -z "$verify"
for u in client server; do
    log "$(systemd-analyze security "ipvs-sync-$u.service" 2>&1 | tail -n 1 | sed 's/^→ //')"
done
check "install: man -w ipvs-sync-client finds its page" \
    test "$(man -w ipvs-sync-client)" = /usr/share/man/man8/ipvs-sync-client.8.gz

# --- network -----------------------------------------------------------------------------------
eth=$(ip -o link | awk -F': ' -v mac="$GUEST_MAC" 'index($0, mac) { split($2, a, "@"); print a[1]; exit }')
[[ -n $eth ]] || setup_fail "no interface with MAC $GUEST_MAC"
ip link add br0 type bridge
ip link set "$eth" master br0
ip link set "$eth" up
ip addr add 192.0.2.11/24 dev br0
ip addr add 2001:db8::11/64 dev br0 nodad
ip link set br0 up
ip netns add "$ARB_NS"
ip -n "$ARB_NS" link set lo up
ip link add v-arb type veth peer name eth0 netns "$ARB_NS"
ip link set v-arb master br0
ip link set v-arb up
ip -n "$ARB_NS" addr add 192.0.2.10/24 dev eth0
ip -n "$ARB_NS" link set eth0 up
broker_open() { timeout 3 "$@" bash -c "exec 3<>/dev/tcp/$BROKER_ADDR/5672" 2>/dev/null; }
wait_until 60 broker_open || setup_fail "the guest cannot reach the broker"
wait_until 60 broker_open ip netns exec "$ARB_NS" || setup_fail "$ARB_NS cannot reach the broker"

# --- configs -----------------------------------------------------------------------------------
secret() { # secret FILE [LINE...]: a new node key (mode 600), the lines; prints its public key
    local file=$1
    shift
    rm -f "$file"
    ipvs-sync keygen --out "$file" 2>/dev/null
    printf 'amqp_password = %s\n' "$AMQP_PASSWORD" >>"$file"
    [[ $# -eq 0 ]] || printf '%s\n' "$@" >>"$file"
}
# Node keys: the balancer pins the arbiter's public key; the arbiter finds the balancer's in
# its balancer_keys_dir (/etc/ipvs-sync/balancers inside its unit).
mkdir -p "$arb/ipvs-sync/balancers"
arb_pub=$(secret "$arb/ipvs-sync/secret.ini")
# The balancer: the example's sync_dirs, /etc/keepalived, which must exist before the unit
# starts (ReadWritePaths=-/etc/keepalived skips a missing one).
mkdir -p /etc/keepalived
cat >"$client_cfg" <<EOF
[main]
amqp_server = $AMQP_URL
hostname = $LB
arbiter_name = arbiter.example.net
arbiter_public_key = $arb_pub
http_listen = 127.0.0.1:9180
heartbeat_interval = 1
consumer_alive_ttl = 10

[bgp]
local_as = 65000
router_id = 192.0.2.11
hold_time = 9
connect_retry = 1

[bgp.peer.r1]
address = $ROUTER_V4
remote_as = 65000

[announce]
interface = vip0
withdraw_grace = 0

[client]
sync_dirs = /etc/keepalived
EOF
secret /etc/ipvs-sync/secret.ini "bgp_password.r1 = $BGP_PASSWORD" >"$arb/ipvs-sync/balancers/$LB.pub"

# The arbiter: its keepalived configs map the VIP to the balancer; keepalived.conf is the
# file the balancer's sync asks for (/etc/keepalived/* on both sides).
mkdir -p "$arb/ipvs-sync" "$arb/keepalived/lbs/$LB/web"
chmod 700 "$arb/ipvs-sync"
cat >"$arb/keepalived/lbs/$LB/web/web.conf" <<EOF
virtual_server $VIP 80 {
    lb_algo wrr
    lb_kind DR
    protocol TCP
    quorum_up "/usr/sbin/ipvs-sync-quorum up $VIP,b-150,80"
    quorum_down "/usr/sbin/ipvs-sync-quorum down $VIP,b-150,80"
    real_server 203.0.113.101 80 {
        weight 10
    }
}
EOF
printf '! synced to the balancers by ipvs-sync (%s)\nglobal_defs {\n    router_id arbiter\n}\n' "$(date +%s)" \
    >"$arb/keepalived/keepalived.conf"
cat >"$arb/ipvs-sync/config.ini" <<EOF
[main]
amqp_server = $AMQP_URL
hostname = arbiter.example.net
http_listen = 127.0.0.1:9181
heartbeat_interval = 1
consumer_alive_ttl = 10
vips_description_update_interval = 0.2
; keepalived's configs as both the arbiter and the quorum handler (outside the unit) see them
service_mapping_wildcard = $arb/keepalived/lbs/*/*/*.conf

[server]
startup_hold = 0
sync_dirs = /etc/keepalived
EOF
mkdir -p /etc/systemd/system/ipvs-sync-server.service.d
cat >/etc/systemd/system/ipvs-sync-server.service.d/vm-systemd.conf <<EOF
# netns-lab/vm-systemd: the arbiter is another host; nothing of the sandbox changes.
[Service]
NetworkNamespacePath=/run/netns/$ARB_NS
BindReadOnlyPaths=$arb/ipvs-sync:/etc/ipvs-sync $arb/keepalived:/etc/keepalived
EOF
systemctl daemon-reload

# --- the arbiter first, then the balancer ------------------------------------------------------
# (A balancer that starts before the arbiter's queue exists loses its sync request: the
# arbiter's welcome sends tree, mapping and announces, not the sync, so it is asked for again
# only after a reconnect or an arbiter restart.)
arbiter_answers() {
    [[ $(ip netns exec "$ARB_NS" ipvs-sync -c "$arb/ipvs-sync/config.ini" status --json 2>/dev/null |
        jq -r 'if .role == "server" then (.holding // "answering") else "" end') == answering ]]
}
check "server: ip_vs is not loaded before a daemon starts" not loaded ip_vs
log "systemctl start ipvs-sync-server"
check "server: systemctl start returns with the unit active (READY=1)" \
    timeout 300 systemctl start ipvs-sync-server
check "server: ip_vs loaded by the kernel on first use, under ProtectKernelModules" loaded ip_vs
check "server: quorum socket in its RuntimeDirectory" test -S /run/ipvs-sync/quorum.sock
ip netns exec "$ARB_NS" ipvsadm -A -t "$VIP:80" -s wrr
ip netns exec "$ARB_NS" ipvsadm -a -t "$VIP:80" -r 203.0.113.101:80 -g -w 10
check "server: answering balancers (mapping, desc files and tree read)" wait_until 120 arbiter_answers

log "systemctl start ipvs-sync-client"
check "client: systemctl start returns with the unit active (READY=1)" \
    timeout 300 systemctl start ipvs-sync-client
check "client: dummy loaded by the kernel on first use, vip0 created" \
    all loaded dummy -- link_exists vip0
check "client: BGP session to r1 (TCP-MD5) Established under the sandbox" \
    wait_until 120 peer_is r1 established
log "ipvs-sync-quorum up $VIP,b-150,80 (as keepalived runs it)"
check "server: ipvs-sync-quorum up (the lean handler) hands the VIP over" \
    ipvs-sync-quorum -c "$arb/ipvs-sync/config.ini" up "$VIP,b-150,80"
check "server: desc file written in /run" test -s "/run/keepalived-$VIP-desc.json"
check "server: mapping written to the host's /var/tmp/svc_mapping.json" \
    wait_until 60 grep -q "$LB" /var/tmp/svc_mapping.json

# --- what the balancer did ---------------------------------------------------------------------
mirrored() { ipvsadm -Sn | grep -q -- "-a -t $VIP:80 -r 203.0.113.101:80 -g -w 10"; }
check "client: mirrors the arbiter's IPVS tree into its kernel" wait_until 120 mirrored
check "client: announces $VIP (its state announced)" wait_until 120 vip_is announced
check "client: $VIP/32 at the router from 192.0.2.11" wait_until 60 router_has "$VIP/32" 192.0.2.11
check "client: $VIP on vip0" grep -q " $VIP/" <(ip -o addr show dev vip0)
synced() { cmp -s "$arb/keepalived/keepalived.conf" /etc/keepalived/keepalived.conf; }
check "client: sync wrote /etc/keepalived/keepalived.conf (ReadWritePaths=-/etc/keepalived)" \
    wait_until 60 synced
check "client: its journal says so" journal_has ipvs-sync-client "sync: written"
pid=$(main_pid ipvs-sync-client)
check "client: outside its writable paths the file system is read-only (EROFS)" \
    all read_only_for ipvs-sync-client /etc/ipvs-sync/probe -- read_only_for ipvs-sync-client /usr/probe
check "client: /var/lib/ipvs-sync is writable (StateDirectory, 0700)" \
    all writable_for ipvs-sync-client /var/lib/ipvs-sync/probe -- test "$(stat -c %a /var/lib/ipvs-sync)" = 700
check "server: /run and /var/tmp writable, /etc read-only" \
    all writable_for ipvs-sync-server /run/probe -- writable_for ipvs-sync-server /var/tmp/probe \
    -- read_only_for ipvs-sync-server /etc/probe

# --- reload: a BGP peer added --------------------------------------------------------------------
printf '\n[bgp.peer.r2]\naddress = %s\nremote_as = 65000\n' "$ROUTER_V6" >>"$client_cfg"
log "added [bgp.peer.r2] ($ROUTER_V6); systemctl reload ipvs-sync-client"
check "reload: systemctl reload succeeds" systemctl reload ipvs-sync-client
check "reload: the new peer r2 (IPv6) reaches Established" wait_until 120 peer_is r2 established
check "reload: r1's session untouched (established once), the same process" \
    all test "$(journal_count ipvs-sync-client "BGP session established.*r1")" -eq 1 -- test "$(main_pid ipvs-sync-client)" = "$pid"

# --- upgrade: the package installed again restarts nothing ---------------------------------------
spid=$(main_pid ipvs-sync-server)
log "dpkg -i $(basename "$DEB") again (an upgrade)"
dpkg -i "$DEB" >"$work/dpkg-upgrade.log" 2>&1 || true
check "upgrade: dpkg -i succeeds" grep -q "Setting up ipvs-sync" "$work/dpkg-upgrade.log"
check "upgrade: both daemons keep running, the same processes, no restart" \
    all test "$(main_pid ipvs-sync-client)" = "$pid" -- test "$(main_pid ipvs-sync-server)" = "$spid" \
    -- unit_is ipvs-sync-client NRestarts 0 -- unit_is ipvs-sync-server NRestarts 0
check "upgrade: the VIP is still announced at the router" router_has "$VIP/32" 192.0.2.11

# --- stops and restarts ------------------------------------------------------------------------
log "systemctl stop ipvs-sync-client (SIGTERM)"
systemctl stop ipvs-sync-client
check "stop: a requested stop exits 0 (Result=success), after the BGP Cease" \
    all unit_is ipvs-sync-client ExecMainStatus 0 -- unit_is ipvs-sync-client Result success \
    -- journal_has ipvs-sync-client "withdrawing every route (BGP Cease)"
systemctl start ipvs-sync-client
log "SIGKILL to the client: Restart=on-failure"
systemctl kill -s SIGKILL ipvs-sync-client
check "restart: a killed client is started again (NRestarts=1, active)" \
    wait_until 120 all unit_is ipvs-sync-client NRestarts 1 -- unit_is ipvs-sync-client ActiveState active

# --- remove and purge --------------------------------------------------------------------------
log "dpkg -r ipvs-sync"
dpkg -r ipvs-sync >"$work/dpkg-remove.log" 2>&1 || true
check "remove: both daemons stopped by prerm" \
    all unit_is ipvs-sync-client ActiveState inactive -- unit_is ipvs-sync-server ActiveState inactive
check "remove: /etc/ipvs-sync and its files kept" test -f /etc/ipvs-sync/secret.ini
check "remove: the binaries and the units gone" \
    all not test -e /usr/sbin/ipvs-sync -- not test -e /usr/sbin/ipvs-sync-quorum -- \
    not test -e /lib/systemd/system/ipvs-sync-client.service
log "dpkg -P ipvs-sync"
dpkg -P ipvs-sync >"$work/dpkg-purge.log" 2>&1 || true
check "purge: /etc/ipvs-sync and /var/lib/ipvs-sync removed" \
    all not test -e /etc/ipvs-sync -- not test -e /var/lib/ipvs-sync

journalctl -q -o short-monotonic -u ipvs-sync-client -u ipvs-sync-server >"$work/journal.log" 2>&1 || true
log "done"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
