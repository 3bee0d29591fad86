#!/usr/bin/env bash
# The reasonflow-otel backend as native processes on this machine (no Docker): the Collector
# (bin/otelcol-reasonflow), Jaeger (bin/jaeger), Prometheus and Alertmanager (Debian packages).
# Build them first with collector-config/build.sh.
#
#   run-local.sh up [--scaled]   start everything, wait until healthy, print the URLs
#   run-local.sh down            stop everything (stored traces and metrics stay)
#   run-local.sh status          what runs, where, and whether it is healthy
#   run-local.sh stop NAME       stop one process (collector, jaeger, prometheus, alertmanager;
#                                with --scaled: agent, gateway-1, gateway-2 in place of collector)
#   run-local.sh start NAME      start it again with the settings `up` used
#
# `up --scaled` runs the agent/gateway tier of scaled/ in place of the one Collector: an agent on
# the Collector's ports, load-balancing traces by trace id over gateway-1 and gateway-2, which
# tail-sample into Jaeger. The gateways accept only the agent's GATEWAY_BEARER_TOKEN (made up
# by `up` when unset, kept in the settings file); each Collector has its own queue on disk
# under the state folder and its own memory limit (AGENT_MEMORY_LIMIT_MIB, GATEWAY_MEMORY_LIMIT_MIB).
#
# The processes run from the same config files as compose.yaml, with one per-mode override
# where a host or port must differ (environment variables for the Collector, jaeger/native.yaml
# for Jaeger, a generated copy of prometheus.yml whose targets are these ports).
#
# Every listener binds to 127.0.0.1: an OTLP receiver open to the network takes anyone's data,
# and an open Jaeger shows anyone's traces. REASONFLOW_OTLP_HOST=0.0.0.0 opens the OTLP
# receivers (applications on other machines); REASONFLOW_STACK_HOST=0.0.0.0 opens every
# listener. Every port is a variable (defaults below; those of compose.yaml where it has one).
# State, logs and pids go to REASONFLOW_STACK_DIR (default: .reasonflow-otel/stack in the
# checkout); Jaeger keeps its traces there in Badger, so they survive a restart. The Collector's
# settings (TAIL_SAMPLING_PERCENTAGE, TAIL_SAMPLING_DECISION_WAIT, ...: otel-collector.yaml) pass
# through from the caller's environment. `up` records every setting; `start`, `stop`, `status`
# and `down` use the recorded ones unless the environment sets them again.
# (These variables are not REASONFLOW_OTEL_*: those are the SDK's, which would warn about names
# it does not know when an app runs from the same shell.)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
state="${REASONFLOW_STACK_DIR:-$(dirname "$here")/.reasonflow-otel/stack}"
settings_file="$state/settings.env"

# Ports, each overridable from the environment.
port_defaults=(
  OTLP_GRPC_PORT=4317              # Collector: OTLP/gRPC from applications
  OTLP_HTTP_PORT=4318              # Collector: OTLP/HTTP from applications
  PROMETHEUS_EXPORTER_PORT=8889    # Collector: metrics for Prometheus (with exemplars)
  HEALTH_CHECK_PORT=13133          # Collector: health check
  COLLECTOR_TELEMETRY_PORT=8888    # Collector: its own metrics
  JAEGER_QUERY_PORT=16686          # Jaeger: query API (and UI page)
  JAEGER_QUERY_GRPC_PORT=16685     # Jaeger: query gRPC API
  JAEGER_OTLP_GRPC_PORT=14317      # Jaeger: OTLP/gRPC from the Collector
  JAEGER_OTLP_HTTP_PORT=14318      # Jaeger: OTLP/HTTP
  JAEGER_HEALTH_PORT=14133         # Jaeger: health check
  JAEGER_TELEMETRY_PORT=14269      # Jaeger: its own metrics
  PROMETHEUS_PORT=9090             # Prometheus: UI and API
  ALERTMANAGER_PORT=9093           # Alertmanager: UI and API
  GATEWAY_1_OTLP_PORT=4327         # --scaled: gateway-1's OTLP/gRPC, from the agent only
  GATEWAY_1_HEALTH_PORT=13134      # --scaled: gateway-1's health check
  GATEWAY_1_TELEMETRY_PORT=8898    # --scaled: gateway-1's own metrics
  GATEWAY_2_OTLP_PORT=4337         # --scaled: gateway-2's OTLP/gRPC
  GATEWAY_2_HEALTH_PORT=13135      # --scaled: gateway-2's health check
  GATEWAY_2_TELEMETRY_PORT=8899    # --scaled: gateway-2's own metrics
)
other_defaults=(
  REASONFLOW_STACK_HOST=127.0.0.1
  PROMETHEUS_SCRAPE_INTERVAL=15s   # also the rule evaluation interval
  PROMETHEUS_RULES="$here/rules/*.yml"
  ALERTMANAGER_CONFIG="$here/alertmanager/alertmanager.yml"
  STACK_START_TIMEOUT=60           # seconds `up` and `start` wait for health
  REASONFLOW_STACK_MODE=single # `up --scaled` records "scaled"
  AGENT_MEMORY_LIMIT_MIB=512       # --scaled: the agent's memory_limiter limit
  GATEWAY_MEMORY_LIMIT_MIB=512     # --scaled: each gateway's
)

say() { printf 'run-local.sh: %s\n' "$*"; }
fail() {
  say "$*" >&2
  exit 1
}

# --- Settings: environment first, then what `up` recorded, then the defaults ------------------

# Every ${env:NAME} the Collector configs read: passed through and recorded.
collector_settings() {
  grep -ho '\${env:[A-Z_][A-Z0-9_]*' "$here"/otel-collector.yaml "$here"/scaled/*.yaml |
    cut -d: -f2 | sort -u
}

load_settings() {
  local line name
  if [[ -f "$settings_file" ]]; then
    while IFS= read -r line; do
      name="${line%%=*}"
      [[ -n "${!name+set}" ]] || eval "export $line"
    done <"$settings_file"
  fi
  for line in "${port_defaults[@]}" "${other_defaults[@]}"; do
    name="${line%%=*}"
    [[ -n "${!name+set}" ]] || export "$line"
  done
  : "${REASONFLOW_OTLP_HOST:=$REASONFLOW_STACK_HOST}"
  export REASONFLOW_OTLP_HOST
  listen="$REASONFLOW_STACK_HOST"
  # Where this machine reaches a listener on $listen.
  case "$listen" in 0.0.0.0 | "::" | "[::]") connect=127.0.0.1 ;; *) connect="$listen" ;; esac
}

record_settings() {
  local name
  mkdir -p "$state"
  : >"$settings_file"
  chmod 600 "$settings_file" # it may hold GATEWAY_BEARER_TOKEN
  for name in $(printf '%s\n' "${port_defaults[@]}" "${other_defaults[@]}" | cut -d= -f1) \
    REASONFLOW_OTLP_HOST $(collector_settings); do
    if [[ -n "${!name+set}" ]]; then printf '%s=%q\n' "$name" "${!name}"; fi
  done >"$settings_file"
}

# --- The processes: one row each (name, health URL, ports, command) ---------------------------

names=()
declare -A health ports

# add_row NAME HEALTH_URL "PORT_VARIABLES"; the command is the function command_NAME.
add_row() {
  names+=("$1")
  health[$1]="$2"
  ports[$1]="$3"
}

backend_rows() {
  add_row alertmanager "http://$connect:$ALERTMANAGER_PORT/-/ready" "ALERTMANAGER_PORT"
  add_row prometheus "http://$connect:$PROMETHEUS_PORT/-/ready" "PROMETHEUS_PORT"
  add_row jaeger "http://$connect:$JAEGER_HEALTH_PORT/status" \
    "JAEGER_QUERY_PORT JAEGER_QUERY_GRPC_PORT JAEGER_OTLP_GRPC_PORT JAEGER_OTLP_HTTP_PORT JAEGER_HEALTH_PORT JAEGER_TELEMETRY_PORT"
}

single_node_rows() {
  add_row collector "http://$connect:$HEALTH_CHECK_PORT/" \
    "OTLP_GRPC_PORT OTLP_HTTP_PORT PROMETHEUS_EXPORTER_PORT HEALTH_CHECK_PORT COLLECTOR_TELEMETRY_PORT"
}

# The agent/gateway tier (scaled/), in place of the collector: the agent takes the Collector's
# ports; each gateway has its own, and only the agent talks to them.
scaled_rows() {
  local n
  for n in 1 2; do
    add_row "gateway-$n" "http://$connect:$(gateway_port "$n" HEALTH)/" \
      "GATEWAY_${n}_OTLP_PORT GATEWAY_${n}_HEALTH_PORT GATEWAY_${n}_TELEMETRY_PORT"
  done
  add_row agent "http://$connect:$HEALTH_CHECK_PORT/" \
    "OTLP_GRPC_PORT OTLP_HTTP_PORT PROMETHEUS_EXPORTER_PORT HEALTH_CHECK_PORT COLLECTOR_TELEMETRY_PORT"
}

# gateway_port N KIND: the value of GATEWAY_<N>_<KIND>_PORT.
gateway_port() {
  local variable="GATEWAY_$1_$2_PORT"
  printf '%s' "${!variable}"
}

binary() {
  local name="$1" path
  path="$(command -v "$name" 2>/dev/null || true)"
  [[ -x "$here/bin/$name" ]] && path="$here/bin/$name"
  [[ -n "$path" ]] || fail "$name is missing: run collector-config/build.sh"
  printf '%s' "$path"
}

command_alertmanager() {
  mkdir -p "$state/alertmanager"
  exec_args=(
    "$(binary prometheus-alertmanager)"
    --config.file="$ALERTMANAGER_CONFIG"
    --storage.path="$state/alertmanager"
    --web.listen-address="$listen:$ALERTMANAGER_PORT"
    --web.external-url="http://$connect:$ALERTMANAGER_PORT"
    --cluster.listen-address=
  )
}

# prometheus.yml with its compose host names replaced by this machine's ports.
native_prometheus_config() {
  local interval="$PROMETHEUS_SCRAPE_INTERVAL"
  sed -e "s|otel-collector:8889|$connect:$PROMETHEUS_EXPORTER_PORT|" \
    -e "s|otel-collector:8888|$connect:$COLLECTOR_TELEMETRY_PORT|" \
    -e "s|jaeger:8888|$connect:$JAEGER_TELEMETRY_PORT|" \
    -e "s|alertmanager:9093|$connect:$ALERTMANAGER_PORT|g" \
    -e "s|localhost:9090|$connect:$PROMETHEUS_PORT|" \
    -e "s|rules/\*\.yml|$PROMETHEUS_RULES|" \
    -e "s|^\(  [a-z_]*_interval:\) .*|\1 $interval|" \
    "$here/prometheus.yml"
}

# scaled/prometheus.yml with its DNS discovery replaced by the agent's and gateways' ports.
native_scaled_prometheus_config() {
  local collectors="\"$connect:$COLLECTOR_TELEMETRY_PORT\""
  collectors+=", \"$connect:$GATEWAY_1_TELEMETRY_PORT\", \"$connect:$GATEWAY_2_TELEMETRY_PORT\""
  awk -v agent="\"$connect:$PROMETHEUS_EXPORTER_PORT\"" -v collectors="$collectors" '
    /^  - job_name:/ { job = $3 }
    /^    dns_sd_configs:/ {
      print "    static_configs:"
      print "      - targets: [" (job == "otel-agent-exporter" ? agent : collectors) "]"
      skip = 1
      next
    }
    skip && /^      / { next }
    { skip = 0; print }
  ' "$here/scaled/prometheus.yml" |
    sed -e "s|jaeger:8888|$connect:$JAEGER_TELEMETRY_PORT|" \
      -e "s|alertmanager:9093|$connect:$ALERTMANAGER_PORT|g" \
      -e "s|\.\./rules/\*\.yml|$PROMETHEUS_RULES|" \
      -e "s|^\(  [a-z_]*_interval:\) .*|\1 $PROMETHEUS_SCRAPE_INTERVAL|"
}

command_prometheus() {
  mkdir -p "$state/prometheus"
  if [[ "$REASONFLOW_STACK_MODE" == scaled ]]; then
    native_scaled_prometheus_config >"$state/prometheus/prometheus.yml"
  else
    native_prometheus_config >"$state/prometheus/prometheus.yml"
  fi
  exec_args=(
    "$(binary prometheus)"
    --config.file="$state/prometheus/prometheus.yml"
    --storage.tsdb.path="$state/prometheus/data"
    --storage.tsdb.retention.time=15d
    --web.listen-address="$listen:$PROMETHEUS_PORT"
    --web.external-url="http://$connect:$PROMETHEUS_PORT"
    --web.enable-lifecycle
    --enable-feature=exemplar-storage
  )
}

command_jaeger() {
  mkdir -p "$state/jaeger"
  exec_args=(
    env
    JAEGER_LISTEN_HOST="$listen"
    JAEGER_QUERY_PORT="$JAEGER_QUERY_PORT"
    JAEGER_QUERY_GRPC_PORT="$JAEGER_QUERY_GRPC_PORT"
    JAEGER_OTLP_GRPC_PORT="$JAEGER_OTLP_GRPC_PORT"
    JAEGER_OTLP_HTTP_PORT="$JAEGER_OTLP_HTTP_PORT"
    JAEGER_HEALTH_PORT="$JAEGER_HEALTH_PORT"
    JAEGER_TELEMETRY_PORT="$JAEGER_TELEMETRY_PORT"
    JAEGER_BADGER_DIR="$state/jaeger/badger"
    PROMETHEUS_URL="http://$connect:$PROMETHEUS_PORT"
    "$(binary jaeger)"
    --config "$here/jaeger/config.yaml"
    --config "$here/jaeger/native.yaml"
  )
}

command_collector() {
  exec_args=(
    env
    OTLP_GRPC_ENDPOINT="$REASONFLOW_OTLP_HOST:$OTLP_GRPC_PORT"
    OTLP_HTTP_ENDPOINT="$REASONFLOW_OTLP_HOST:$OTLP_HTTP_PORT"
    JAEGER_OTLP_ENDPOINT="$connect:$JAEGER_OTLP_GRPC_PORT"
    PROMETHEUS_EXPORTER_ENDPOINT="$listen:$PROMETHEUS_EXPORTER_PORT"
    HEALTH_CHECK_ENDPOINT="$listen:$HEALTH_CHECK_PORT"
    COLLECTOR_TELEMETRY_HOST="$listen"
    COLLECTOR_TELEMETRY_PORT="$COLLECTOR_TELEMETRY_PORT"
    "$(binary otelcol-reasonflow)"
    --config="$here/otel-collector.yaml"
  )
}

command_agent() {
  exec_args=(
    env
    OTLP_GRPC_ENDPOINT="$REASONFLOW_OTLP_HOST:$OTLP_GRPC_PORT"
    OTLP_HTTP_ENDPOINT="$REASONFLOW_OTLP_HOST:$OTLP_HTTP_PORT"
    PROMETHEUS_EXPORTER_ENDPOINT="$listen:$PROMETHEUS_EXPORTER_PORT"
    HEALTH_CHECK_ENDPOINT="$listen:$HEALTH_CHECK_PORT"
    COLLECTOR_TELEMETRY_HOST="$listen"
    COLLECTOR_TELEMETRY_PORT="$COLLECTOR_TELEMETRY_PORT"
    GATEWAY_ENDPOINTS="[$connect:$GATEWAY_1_OTLP_PORT, $connect:$GATEWAY_2_OTLP_PORT]"
    GATEWAY_BEARER_TOKEN="$GATEWAY_BEARER_TOKEN"
    QUEUE_DIRECTORY="$state/agent/queue"
    MEMORY_LIMIT_MIB="$AGENT_MEMORY_LIMIT_MIB"
    "$(binary otelcol-reasonflow)"
    --config="$here/scaled/otel-agent.yaml"
  )
}

# command_gateway N: gateway-N on its own ports and queue directory.
command_gateway() {
  exec_args=(
    env
    OTLP_GRPC_ENDPOINT="$listen:$(gateway_port "$1" OTLP)"
    HEALTH_CHECK_ENDPOINT="$listen:$(gateway_port "$1" HEALTH)"
    COLLECTOR_TELEMETRY_HOST="$listen"
    COLLECTOR_TELEMETRY_PORT="$(gateway_port "$1" TELEMETRY)"
    JAEGER_OTLP_ENDPOINT="$connect:$JAEGER_OTLP_GRPC_PORT"
    GATEWAY_BEARER_TOKEN="$GATEWAY_BEARER_TOKEN"
    GATEWAY_NAME="gateway-$1"
    QUEUE_DIRECTORY="$state/gateway-$1/queue"
    MEMORY_LIMIT_MIB="$GATEWAY_MEMORY_LIMIT_MIB"
    "$(binary otelcol-reasonflow)"
    --config="$here/scaled/otel-gateway.yaml"
  )
}
command_gateway_1() { command_gateway 1; }
command_gateway_2() { command_gateway 2; }

# --- Running, stopping, checking ----------------------------------------------------------------

pid_of() {
  local file="$state/$1.pid" pid
  [[ -f "$file" ]] || return 1
  pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null || return 1
  printf '%s' "$pid"
}

healthy() {
  curl -fsS -o /dev/null --max-time 2 "${health[$1]}" 2>/dev/null
}

# "PID NAME" of the process listening on TCP port $1, or nothing.
port_holder() {
  ss -ltnpH "sport = :$1" 2>/dev/null |
    sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\2 \1/p' | head -n 1
}

port_taken() {
  [[ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]]
}

check_ports_free() {
  local name="$1" variable port holder
  for variable in ${ports[$name]}; do
    port="${!variable}"
    if port_taken "$port"; then
      holder="$(port_holder "$port")"
      fail "$name: port $port ($variable) is taken${holder:+ by ${holder#* } (pid ${holder%% *})}; stop it or set $variable to a free port"
    fi
  done
}

wait_healthy() {
  local name="$1" pid="$2" deadline=$((SECONDS + STACK_START_TIMEOUT))
  until healthy "$name"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited; the end of $state/$name.log:" >&2
      tail -n 20 "$state/$name.log" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then
      say "$name not healthy after ${STACK_START_TIMEOUT}s (${health[$name]}); see $state/$name.log" >&2
      return 1
    fi
    sleep 0.3
  done
}

start_process() {
  local name="$1" pid
  if pid="$(pid_of "$name")"; then
    say "$name already runs (pid $pid)"
    return
  fi
  check_ports_free "$name"
  local exec_args=()
  "command_${name//-/_}"
  setsid "${exec_args[@]}" >>"$state/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$state/$name.pid"
  if ! wait_healthy "$name" "$pid"; then
    stop_process "$name"
    return 1
  fi
  say "$name is up (pid $pid)"
}

stop_process() {
  local name="$1" pid
  if ! pid="$(pid_of "$name")"; then
    [[ -f "$state/$name.pid" ]] || say "$name is not running"
    rm -f "$state/$name.pid"
    return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$state/$name.pid"
  say "$name stopped"
}

print_urls() {
  cat <<EOF
Send telemetry:  OTEL_EXPORTER_OTLP_ENDPOINT=http://$connect:$OTLP_GRPC_PORT (gRPC; OTLP/HTTP on :$OTLP_HTTP_PORT)
Jaeger API:      http://$connect:$JAEGER_QUERY_PORT   (view it: reasonflow-otel ui --jaeger http://$connect:$JAEGER_QUERY_PORT)
Prometheus:      http://$connect:$PROMETHEUS_PORT   (alerts: /alerts)
Alertmanager:    http://$connect:$ALERTMANAGER_PORT
Logs and data:   $state
Stop:            collector-config/run-local.sh down
EOF
}

# --- Commands ------------------------------------------------------------------------------------

rows() {
  backend_rows
  if [[ "$REASONFLOW_STACK_MODE" == scaled ]]; then scaled_rows; else single_node_rows; fi
}

known() {
  local name
  for name in "${names[@]}"; do [[ "$name" == "$1" ]] && return 0; done
  fail "no process named '$1'; the stack has: ${names[*]}"
}

up() {
  REASONFLOW_STACK_MODE=single
  [[ "${1:-}" == "--scaled" ]] && REASONFLOW_STACK_MODE=scaled
  if [[ "$REASONFLOW_STACK_MODE" == scaled && -z "${GATEWAY_BEARER_TOKEN:-}" ]]; then
    GATEWAY_BEARER_TOKEN="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    export GATEWAY_BEARER_TOKEN
  fi
  rows
  local name
  # Every port first, so that a taken one stops `up` before anything starts.
  for name in "${names[@]}"; do
    pid_of "$name" >/dev/null || check_ports_free "$name"
  done
  record_settings
  for name in "${names[@]}"; do
    start_process "$name" || {
      down
      fail "the stack did not start (see above); everything is stopped again"
    }
  done
  print_urls
}

down() {
  local i pid_file
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do stop_process "${names[i]}"; done
  # Anything else this state folder started (e.g. a tier `up` ran in another mode).
  for pid_file in "$state"/*.pid; do
    [[ -e "$pid_file" ]] && stop_process "$(basename "$pid_file" .pid)"
  done
  rm -f "$settings_file"
}

status() {
  local name pid running=0
  for name in "${names[@]}"; do
    if pid="$(pid_of "$name")"; then
      if healthy "$name"; then
        printf '%-14s running (pid %s), healthy\n' "$name" "$pid"
        running=$((running + 1))
      else
        printf '%-14s running (pid %s), NOT healthy: %s\n' "$name" "$pid" "${health[$name]}"
      fi
    else
      printf '%-14s stopped\n' "$name"
    fi
  done
  ((running == 0)) || print_urls
  ((running == ${#names[@]}))
}

main() {
  local command="${1:-}"
  shift || true
  load_settings
  mkdir -p "$state"
  case "$command" in
    up) up "$@" ;;
    down) rows && down ;;
    status) rows && status ;;
    start)
      rows && known "${1:?start NAME}" && start_process "$1"
      ;;
    stop)
      rows && known "${1:?stop NAME}" && stop_process "$1"
      ;;
    *)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      [[ -z "$command" || "$command" == -h || "$command" == --help ]] || exit 2
      ;;
  esac
}

main "$@"
