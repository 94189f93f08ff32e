#!/usr/bin/env bash
# The local stack: redis-server (append-only, data under run/), the messages, presence
# and retention services and GATEWAYS gateways (default 1) on consecutive ports from
# CHAT_HTTP_PORT (default 8080). One line per service when ready; logs in run/logs/.
# The messages, presence and retention services answer /healthz, /readyz and /metrics on
# ADMIN_PORT, ADMIN_PORT+1 and ADMIN_PORT+2 (default 9091; 0 picks free ports); the
# gateways on their own ports. Ctrl-C (or SIGTERM) stops everything and leaves no process
# behind; run/pids lists what is running.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
configuration=${CONFIGURATION:-release}
bin="$root/.build/$configuration"
run_dir=${RUN_DIR:-$root/run}
redis_port=${REDIS_PORT:-6390}
gateways=${GATEWAYS:-1}
http_port=${CHAT_HTTP_PORT:-8080}
admin_port=${ADMIN_PORT:-9091}

mkdir -p "$run_dir/logs" "$run_dir/redis" "$run_dir/data"
export CHAT_REDIS_URL=${CHAT_REDIS_URL:-redis://127.0.0.1:$redis_port}
export CHAT_DB_PATH=${CHAT_DB_PATH:-$run_dir/data/chat.sqlite}
export LOG_LEVEL=${LOG_LEVEL:-info}
export CHAT_PUBLIC_DIR=${CHAT_PUBLIC_DIR:-$root/Services/gateway/Public}
# One signing key for every gateway, kept in the run folder so tokens survive restarts.
[ -s "$run_dir/jwt-secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > "$run_dir/jwt-secret"
export CHAT_JWT_SECRET=${CHAT_JWT_SECRET:-$(cat "$run_dir/jwt-secret")}

pids=()
: > "$run_dir/pids"
stop_all() {
  trap - INT TERM EXIT
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  if [ -n "${redis_pid:-}" ]; then
    redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || kill -TERM "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
  fi
  : > "$run_dir/pids"
  echo "stopped"
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

wait_for_line() { # file pattern seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

for exe in chat-messages chat-presence chat-retention chat-gateway chatctl; do
  [ -x "$bin/$exe" ] || { echo "$bin/$exe is missing: run 'swift build -c $configuration' (or make run)"; exit 1; }
done

redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$run_dir/redis" \
  --appendonly yes --save "" --daemonize no --logfile "$run_dir/logs/redis.log" &
redis_pid=$!
echo "redis-server $redis_pid" >> "$run_dir/pids"
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" ping >/dev/null 2>&1 || { echo "redis-server did not start; see $run_dir/logs/redis.log"; exit 1; }
echo "redis        ready  $CHAT_REDIS_URL (append-only files in $run_dir/redis)"

address_in() { # log pattern: the host:port logged on the line matching pattern
  grep "$2" "$1" | grep -o 'http.address=[^ ]*' | head -1 | sed 's/http.address=//; s/^\[IPv4\]//; s/^[^/]*\///'
}

start() { # name log [env...]
  local name=$1 log=$2; shift 2
  env "$@" "$bin/$name" >"$log" 2>&1 &
  pids+=($!)
  echo "$name $!" >> "$run_dir/pids"
  if wait_for_line "$log" "\] ready" 30; then
    local admin serving
    admin=$(address_in "$log" "admin endpoints listening")
    serving=$(address_in "$log" "\] ready")
    if [ -n "$admin" ]; then
      printf '%-14s ready  log %s  health and metrics http://%s/metrics\n' "$name" "$log" "$admin"
    else
      printf '%-14s ready  log %s  serving %s\n' "$name" "$log" "$serving"
    fi
  else
    echo "$name did not become ready; its log:"; tail -20 "$log"; exit 1
  fi
}

admin() { [ "$admin_port" = 0 ] && echo 0 || echo $(( admin_port + $1 )); }
start chat-messages "$run_dir/logs/messages.log" CHAT_ADMIN_PORT="$(admin 0)"
start chat-presence "$run_dir/logs/presence.log" CHAT_ADMIN_PORT="$(admin 1)"
start chat-retention "$run_dir/logs/retention.log" CHAT_ADMIN_PORT="$(admin 2)"
for i in $(seq 1 "$gateways"); do
  port=$(( http_port + i - 1 ))
  start chat-gateway "$run_dir/logs/gateway-$i.log" CHAT_HTTP_PORT="$port" CHAT_GATEWAY_ID="gw-local-$i"
done

# Demo accounts: DEMO=1 (the default here) gives them the password "password";
# DEMO=0 generates one per account and prints it once.
if [ "${DEMO:-1}" = "1" ]; then seed_flags=--demo-password; else seed_flags=; fi
"$bin/chatctl" seed-demo $seed_flags | sed 's/^/  account  /'

first_gateway=$(address_in "$run_dir/logs/gateway-1.log" "\] ready")
scheme=http; [ -n "${CHAT_TLS_CERT:-}" ] && scheme=https
echo "web and API: $scheme://${first_gateway:-127.0.0.1:$http_port}  (health: /healthz /readyz, metrics: /metrics, API description: /api/openapi.json)"
echo "all services ready; Ctrl-C stops them"
wait -n "${pids[@]}" 2>/dev/null
echo "a service exited unexpectedly; see $run_dir/logs/"
exit 1
