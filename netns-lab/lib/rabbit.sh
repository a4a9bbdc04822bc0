# shellcheck shell=bash
# RabbitMQ (Debian's rabbitmq-server) as the lab's broker, in the broker namespace.
# Sourced after common.sh. The same recipe as labkit's Rabbit: everything (config,
# mnesia, logs, cookie) in one directory owned by user `rabbitmq`, because Debian's
# server runs as that user and refuses directories it cannot write.

RABBIT_BIN=/usr/lib/rabbitmq/bin

# Environment for rabbitmq-server and rabbitmqctl of the lab broker (dir $1); they run
# with `env -i` and this only, so nothing from /etc/rabbitmq or the caller leaks in.
rabbit_env() {
  local dir=$1
  echo "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
  echo "LANG=C.UTF-8"
  echo "HOME=$dir/home"
  echo "RABBITMQ_NODENAME=rabbit@localhost"
  echo "RABBITMQ_CONF_ENV_FILE=/dev/null"
  echo "RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf"
  echo "RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins"
  echo "RABBITMQ_MNESIA_BASE=$dir/mnesia"
  echo "RABBITMQ_LOG_BASE=$dir/log"
  echo "RABBITMQ_PID_FILE=$dir/rabbit.pid"
  echo "RABBITMQ_DIST_PORT=25672"
}

# Runs a RabbitMQ program as user rabbitmq with the lab broker's environment, in the
# broker namespace. setpriv execs in place (unlike runuser), so a pid taken of this is
# the server's own.
rabbit_run() {
  local prog=$1
  shift
  local -a env
  mapfile -t env < <(rabbit_env "$RUN/broker")
  in_ns broker setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    env -i "${env[@]}" "$RABBIT_BIN/$prog" "$@"
}

# Writes the broker's config once; the password comes from run/broker/amqp_password.
rabbit_gen() {
  local dir=$RUN/broker pw
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  pw=$(<"$dir/amqp_password")
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
  echo '[].' >"$dir/enabled_plugins"
  chown -R rabbitmq:rabbitmq "$dir"
  chmod 700 "$dir"
}

broker_port_open() {
  in_ns broker bash -c "exec 3<>/dev/tcp/${V4[broker]}/$AMQP_PORT" 2>/dev/null
}

# Starts the broker unless it runs, and waits until it takes connections (~4 s).
rabbit_start() {
  local pidfile=$RUN/broker.pid
  if pid_alive "$pidfile" rabbitmq-server; then
    return 0
  fi
  id rabbitmq >/dev/null 2>&1 || die "no user rabbitmq: install rabbitmq-server (netns-lab/setup)"
  rabbit_gen
  local -a env
  mapfile -t env < <(rabbit_env "$RUN/broker")
  start_bg broker "$pidfile" "$LOGS/broker.log" \
    setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    env -i "${env[@]}" "$RABBIT_BIN/rabbitmq-server"
  if ! wait_for 60 broker_port_open; then
    tail -n 20 "$LOGS/broker.log" >&2
    die "broker did not open port $AMQP_PORT in 60 s; log $LOGS/broker.log"
  fi
}

# Stops the broker: a clean `rabbitmqctl stop`, then by pid if it is still there.
rabbit_stop() {
  local pidfile=$RUN/broker.pid
  if pid_alive "$pidfile" rabbitmq-server; then
    rabbit_run rabbitmqctl stop >>"$LOGS/broker.log" 2>&1 || true
  fi
  stop_pidfile "$pidfile" rabbitmq-server
}
