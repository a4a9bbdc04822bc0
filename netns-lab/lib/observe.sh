# shellcheck shell=bash
# Watching the routers from scripts (demo, bench): who announces a prefix, how long a
# change takes to show. Sourced after common.sh.

now_ms() {
  date +%s%3N
}

# The neighbors ROUTER learned PREFIX from, sorted, space-separated ("" if none).
rib_sources() {
  local r=$1 prefix=$2 fam=ipv4
  [[ $prefix == *:* ]] && fam=ipv6
  gobgp_of "$r" global rib -a "$fam" -j 2>/dev/null |
    jq -r --arg p "$prefix" '[(.[$p] // [])[] | .["neighbor-ip"] // empty] | sort | join(" ")'
}

# Polls ROUTER every ~20 ms until the sources of PREFIX are exactly WANT; prints the
# milliseconds it took since START_MS, or returns 1 after TIMEOUT seconds.
wait_sources() {
  local r=$1 prefix=$2 want=$3 start=$4 timeout=$5
  local deadline=$((start + timeout * 1000))
  while :; do
    if [[ $(rib_sources "$r" "$prefix") == "$want" ]]; then
      echo $(($(now_ms) - start))
      return 0
    fi
    (($(now_ms) < deadline)) || return 1
    sleep 0.02
  done
}

# How many of ROUTER's neighbors are Established.
established_count() {
  gobgp_of "$1" neighbor -j 2>/dev/null | jq '[.[] | select(.state.session_state == 6)] | length'
}
