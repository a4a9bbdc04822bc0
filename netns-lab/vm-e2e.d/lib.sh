# shellcheck shell=bash
# netns-lab/vm-e2e.d/lib.sh — what the guest scripts of netns-lab/vm-e2e share: their start,
# namespaces on a bridge to the host's tap, polling, the daemons' configs and their stop.

# Reads WORK/env (BIN, AMQP_URL, BROKER_ADDR, BROKER_PORT, GUEST_MAC,
# ROUTER_ADDR, ROUTER_STREAM), sets work, logs (WORK/logs) and run (RUN, the guest's own
# files), sends the script's output to WORK/guest.log, and copies the binary into guest
# memory (BIN then names the copy).
guest_start() { # guest_start WORK RUN
    work=$1
    date +%s.%N >"$work/t_guest"
    # shellcheck source=/dev/null
    source "$work/env"
    logs=$work/logs
    run=$2
    mkdir -p "$run" "$logs"
    # The host follows this file (the VM console is not a reliable channel for long output).
    exec >>"$work/guest.log" 2>&1
    # Every daemon and CLI start would read the binary over 9p otherwise.
    cp "$BIN" "$run/ipvs-sync"
    BIN=$run/ipvs-sync
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

# Every daemon started, stopped by pid (TERM, then KILL after 5 s).
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

setup_fail() {
    echo "vm-e2e guest: $*" >&2
    exit 125
}

# br0 on the tap's interface (the one with GUEST_MAC), and for each NS=ADDR a namespace with
# a veth on br0 holding ADDR/24; returns once every namespace reaches the broker.
topology() { # topology NS=ADDR…
    local eth arg ns
    eth=$(ip -o link | awk -F': ' -v mac="$GUEST_MAC" 'index($0, mac) { split($2, a, "@"); print a[1]; exit }')
    [[ -n $eth ]] || setup_fail "no interface with MAC $GUEST_MAC (is the tap device attached?)"
    ip link add br0 type bridge
    ip link set "$eth" master br0
    ip addr add 192.0.2.2/24 dev br0
    ip link set "$eth" up
    ip link set br0 up
    for arg in "$@"; do
        ns=${arg%%=*}
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip link add "v-$ns" type veth peer name eth0 netns "$ns"
        ip link set "v-$ns" master br0
        ip link set "v-$ns" up
        ip -n "$ns" addr add "${arg#*=}/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    for arg in "$@"; do
        wait_until 30 broker_open "${arg%%=*}" ||
            setup_fail "${arg%%=*} cannot reach the broker at $BROKER_ADDR:$BROKER_PORT"
    done
}
broker_open() { in_ns "$1" timeout 3 bash -c "exec 3<>/dev/tcp/$BROKER_ADDR/$BROKER_PORT" 2>/dev/null; }

# DIR/config.ini and DIR/secret.ini of a daemon: the [main] keys every daemon of the lane
# has, then the lines of stdin (more [main] keys first, then sections). secret.ini holds a
# node key of its own (`ipvs-sync keygen`), its public key goes to DIR/node.pub.
daemon_config() { # daemon_config DIR HOSTNAME <MORE
    mkdir -p "$1"
    rm -f "$1/secret.ini"
    "$BIN" keygen --out "$1/secret.ini" >"$1/node.pub"
    {
        printf '[main]\namqp_server = %s\nhostname = %s\nipvs = true\n' "$AMQP_URL" "$2"
        printf 'heartbeat_interval = 1\nconsumer_alive_ttl = 10\n'
        printf 'control_socket = %s/control.sock\nstate_dir = %s/state\n' "$1" "$1"
        cat
    } >"$1/config.ini"
}

# The arbiter's config in DIR: desc files in DIR/desc, keepalived configs under DIR/lbs,
# the balancers' public keys in DIR/balancers (client_config puts them there).
arbiter_config() { # arbiter_config DIR [MORE [main] LINES…]
    local d=$1 line
    shift
    arbiter_dir=$d
    mkdir -p "$d/desc" "$d/balancers"
    {
        printf 'service_mapping_wildcard = %s/lbs/*/*/*.conf\n' "$d"
        printf 'service_mapping_config = %s/svc_mapping.json\n' "$d"
        printf 'vip_description_filepath = %s/desc/keepalived-{vip}-desc.json\n' "$d"
        for line in "$@"; do echo "$line"; done
        printf '\n[server]\nquorum_socket = %s/quorum.sock\nstartup_hold = 0\n' "$d"
        printf 'balancer_keys_dir = %s/balancers\n' "$d"
    } | daemon_config "$d" arbiter
}

# A balancer's config in DIR: iBGP (AS 65000) to the host's router, VIPs on vip0; it pins
# the arbiter of the last arbiter_config, whose key directory gets its public key.
client_config() { # client_config DIR HOSTNAME ADDR [MORE [bgp] LINES…]
    local d=$1 host=$2 addr=$3 line
    shift 3
    {
        printf 'arbiter_name = arbiter\narbiter_public_key = %s\n' "$(cat "$arbiter_dir/node.pub")"
        printf '\n[bgp]\nlocal_as = 65000\nrouter_id = %s\nhold_time = 9\nconnect_retry = 1\n' "$addr"
        for line in "$@"; do echo "$line"; done
        printf '\n[bgp.peer.r1]\naddress = %s\nremote_as = 65000\n' "$ROUTER_ADDR"
        printf '\n[announce]\ninterface = vip0\n'
    } | daemon_config "$d" "$host"
    cp "$d/node.pub" "$arbiter_dir/balancers/$host.pub"
}

# Starts `ipvs-sync MODE` with CONFIG in NS, logging to LOG (debug); its pid joins pids.
start_daemon() { # start_daemon NS CONFIG LOG MODE
    in_ns "$1" "$BIN" -c "$2" --log-level debug "$4" >>"$3" 2>&1 &
    pids+=($!)
}
