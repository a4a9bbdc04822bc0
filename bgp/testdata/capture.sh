#!/bin/sh
# Captures the byte vectors in gobgp-capture.hex from Debian's gobgpd 3.10 (run as root).
# Two namespaces joined by a veth: "gcap-r" runs gobgpd (AS 65001, 192.0.2.1, 2001:db8::1),
# "gcap-p" runs capture.py listening as three peers:
#   192.0.2.2 eBGP AS 65002 (graceful restart on), 192.0.2.3 iBGP AS 65001, 192.0.2.4 sends an OPEN with hold time 1.
# Routes are injected with the gobgp CLI, then withdrawn, a soft reset in (ROUTE-REFRESH) and an
# administrative shutdown with a message are requested.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/gobgp-capture.hex}
R=gcap-r P=gcap-p
cleanup() { kill "$GP" "$PY" 2>/dev/null || true; ip netns del $R 2>/dev/null || true; ip netns del $P 2>/dev/null || true; }
trap cleanup EXIT
ip netns add $R; ip netns add $P
ip -n $R link set lo up; ip -n $P link set lo up
ip link add gcap0 netns $R type veth peer name gcap1 netns $P
ip -n $R addr add 192.0.2.1/24 dev gcap0; ip -n $R addr add 2001:db8::1/64 dev gcap0 nodad
for a in 192.0.2.2 192.0.2.3 192.0.2.4; do ip -n $P addr add $a/24 dev gcap1; done
ip -n $R link set gcap0 up; ip -n $P link set gcap1 up
cat > /tmp/gcap.toml <<TOML
[global.config]
  as = 65001
  router-id = "192.0.2.1"
  port = -1
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.2"
    peer-as = 65002
  [neighbors.timers.config]
    connect-retry = 1
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.3"
    peer-as = 65001
  [neighbors.timers.config]
    connect-retry = 1
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "192.0.2.4"
    peer-as = 65004
  [neighbors.timers.config]
    connect-retry = 1
TOML
ip netns exec $P python3 "$here/capture.py" --out "$out" --seconds 40 \
  --peer 192.0.2.2,65002,90 --peer 192.0.2.3,65001,90 --peer 192.0.2.4,65004,1 & PY=$!
ip netns exec $R gobgpd -f /tmp/gcap.toml -l warn >/tmp/gcap.log 2>&1 & GP=$!
g() { ip netns exec $R gobgp "$@"; }
i=0
until [ "$(g neighbor 192.0.2.2 -j 2>/dev/null | grep -c '"session_state":6')" = 1 ] && \
      [ "$(g neighbor 192.0.2.3 -j 2>/dev/null | grep -c '"session_state":6')" = 1 ]; do
  i=$((i+1)); [ $i -lt 60 ] || { echo "sessions did not come up" >&2; exit 1; }; sleep 0.5
done
sleep 1
g global rib add -a ipv4 198.51.100.1/32 origin igp med 10 local-pref 200 community 65001:100,65001:200 large-community 65001:1:2
g global rib add -a ipv4 198.51.100.2/32 origin igp med 10 local-pref 200 community 65001:100,65001:200 large-community 65001:1:2
g global rib add -a ipv6 2001:db8:1::1/128 origin igp med 20 community 65001:300
sleep 2
g global rib del -a ipv4 198.51.100.2/32
g global rib del -a ipv6 2001:db8:1::1/128
sleep 1
g neighbor 192.0.2.2 softresetin -a ipv4 || true
sleep 1
g neighbor 192.0.2.2 shutdown --reason "maintenance window"
sleep 1
kill $PY
