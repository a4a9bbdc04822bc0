# shellcheck shell=bash
# RabbitMQ (Debian's rabbitmq-server) as the lab's broker, one node per broker namespace
# (BROKERS in topology.sh: `broker`, or `broker broker2 broker3` for a cluster with
# LAB_BROKERS=3). Sourced after common.sh. The same recipe as labkit's Rabbit and
# RabbitCluster: everything (config, mnesia, logs, cookie) in one directory per node owned
# by user `rabbitmq`, because Debian's server runs as that user and refuses directories it
# cannot write.

RABBIT_BIN=/usr/lib/rabbitmq/bin

# Whether the lab's broker is a cluster.
rabbit_clustered() {
  ((${#BROKERS[@]} > 1))
}

# The Erlang node name of broker node $1: one broker keeps `rabbit@localhost`; a cluster's
# nodes use long names on their addresses, so they find each other.
rabbit_nodename() {
  if rabbit_clustered; then
    echo "rabbit@${V4[$1]}"
  else
    echo "rabbit@localhost"
  fi
}

# Environment for rabbitmq-server and rabbitmqctl of broker node $1; they run with `env -i`
# and this only, so nothing from /etc/rabbitmq or the caller leaks in.
rabbit_env() {
  local node=$1 dir=$RUN/$1
  echo "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
  echo "LANG=C.UTF-8"
  echo "HOME=$dir/home"
  echo "RABBITMQ_NODENAME=$(rabbit_nodename "$node")"
  echo "RABBITMQ_CONF_ENV_FILE=/dev/null"
  echo "RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf"
  echo "RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins"
  echo "RABBITMQ_MNESIA_BASE=$dir/mnesia"
  echo "RABBITMQ_LOG_BASE=$dir/log"
  echo "RABBITMQ_PID_FILE=$dir/rabbit.pid"
  echo "RABBITMQ_DIST_PORT=25672"
  if rabbit_clustered; then
    echo "RABBITMQ_USE_LONGNAME=true"
    # The nodes notice a silent peer after 8 s instead of Erlang's 60 s.
    echo "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel net_ticktime 8"
  fi
}

# Runs a RabbitMQ program as user rabbitmq with broker node $1's environment, in its
# namespace. setpriv execs in place (unlike runuser), so a pid taken of this is the
# server's own.
rabbit_run() {
  local node=$1 prog=$2
  shift 2
  local -a env
  mapfile -t env < <(rabbit_env "$node")
  in_ns "$node" setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    env -i "${env[@]}" "$RABBIT_BIN/$prog" "$@"
}

# `rabbitmqctl -n NODE ARGS…` against broker node $1.
rabbit_ctl() {
  local node=$1
  shift
  rabbit_run "$node" rabbitmqctl -n "$(rabbit_nodename "$node")" "$@"
}

# Writes broker node $1's config once; the password comes from run/broker/amqp_password,
# a cluster's Erlang cookie from run/secrets/erlang_cookie (made once).
rabbit_gen() {
  local node=$1 dir=$RUN/$1 pw cookie=$RUN/secrets/erlang_cookie
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  pw=$(<"$RUN/broker/amqp_password")
  # The default user is created on first boot of an empty mnesia; loopback_users = none
  # lets it log in from the other namespaces.
  cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = $AMQP_PORT
default_user = $AMQP_USER
default_pass = $pw
default_vhost = /
loopback_users = none
log.console = false
log.file.level = info
EOF
  if rabbit_clustered; then
    # A node cut off from the other two stops serving, so its clients move.
    echo "cluster_partition_handling = pause_minority" >>"$dir/rabbitmq.conf"
    if [[ ! -s $cookie ]]; then
      (umask 077 && od -An -N20 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F >"$cookie")
    fi
    install -m 400 "$cookie" "$dir/home/.erlang.cookie"
  fi
  echo '[].' >"$dir/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$dir"
  chmod 700 "$dir"
}

# Whether no socket of broker node $1's namespace holds the distribution port: RabbitMQ
# refuses to boot while one does (dist_port_already_used), and after a kill or a stop the
# node's closed cluster connections keep it in TIME_WAIT for up to a minute.
dist_port_free() {
  [[ -z $(in_ns "$1" ss -Htan "sport = :25672") ]]
}

broker_port_open() {
  in_ns "$1" bash -c "exec 3<>/dev/tcp/${V4[$1]}/$AMQP_PORT" 2>/dev/null
}

# Starts broker node $1 unless it runs, and waits until it takes connections (~4 s).
rabbit_start() {
  local node=$1 pidfile=$RUN/$1.pid
  if pid_alive "$pidfile" rabbitmq-server; then
    return 0
  fi
  id rabbitmq >/dev/null 2>&1 || die "no user rabbitmq: install rabbitmq-server (netns-lab/setup)"
  rabbit_gen "$node"
  wait_for 75 dist_port_free "$node" || die "port 25672 still held in broker node $node after 75 s"
  local -a env
  mapfile -t env < <(rabbit_env "$node")
  start_bg "$node" "$pidfile" "$LOGS/$node.log" \
    setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    env -i "${env[@]}" "$RABBIT_BIN/rabbitmq-server"
  if ! wait_for 60 broker_port_open "$node"; then
    tail -n 20 "$LOGS/$node.log" >&2
    die "broker node $node did not open port $AMQP_PORT in 60 s; log $LOGS/$node.log"
  fi
}

# Starts every broker node; a cluster's other nodes then join the first (each comes up on
# its own, fresh, and `join_cluster` makes it a member).
rabbit_start_all() {
  local node first=${BROKERS[0]}
  for node in "${BROKERS[@]}"; do rabbit_start "$node"; done
  rabbit_clustered || return 0
  for node in "${BROKERS[@]:1}"; do
    if rabbit_ctl "$first" cluster_status 2>/dev/null | grep -q "$(rabbit_nodename "$node")"; then
      continue
    fi
    {
      rabbit_ctl "$node" stop_app &&
        rabbit_ctl "$node" join_cluster "$(rabbit_nodename "$first")" &&
        rabbit_ctl "$node" start_app
    } >>"$LOGS/$node.log" 2>&1 || die "broker node $node did not join $first; log $LOGS/$node.log"
  done
}

# Stops broker node $1: a clean `rabbitmqctl stop`, then by pid if it is still there.
rabbit_stop() {
  local node=$1 pidfile=$RUN/$1.pid
  if pid_alive "$pidfile" rabbitmq-server; then
    rabbit_ctl "$node" stop >>"$LOGS/$node.log" 2>&1 || true
  fi
  stop_pidfile "$pidfile" rabbitmq-server
}

# Stops every broker node, the first last.
rabbit_stop_all() {
  local i
  for ((i = ${#BROKERS[@]} - 1; i >= 0; i--)); do rabbit_stop "${BROKERS[i]}"; done
}

# Sends signal $2 to every process of user rabbitmq in broker node $1's namespace (the
# server, its Erlang VM, epmd): `KILL` is a crashed broker host.
rabbit_signal() {
  local node=$1 sig=$2 pid
  for pid in $(ip netns pids "$PREFIX$node" 2>/dev/null); do
    [[ $(stat -c %U "/proc/$pid" 2>/dev/null) == rabbitmq ]] || continue
    kill -s "$sig" "$pid" 2>/dev/null || true
  done
}
