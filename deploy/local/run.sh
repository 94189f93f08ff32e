#!/usr/bin/env bash
# The local stack: redis-server (append-only, data under run/), the messages, presence
# and retention services and GATEWAYS gateways (default 1) on consecutive ports from
# CHAT_HTTP_PORT (default 8080). One line per service when ready; logs in run/logs/.
# Ctrl-C (or SIGTERM) stops everything and leaves no process behind.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
configuration=${CONFIGURATION:-release}
bin="$root/.build/$configuration"
run_dir=${RUN_DIR:-$root/run}
redis_port=${REDIS_PORT:-6390}
gateways=${GATEWAYS:-1}
http_port=${CHAT_HTTP_PORT:-8080}

mkdir -p "$run_dir/logs" "$run_dir/redis" "$run_dir/data"
export CHAT_REDIS_URL=${CHAT_REDIS_URL:-redis://127.0.0.1:$redis_port}
export CHAT_DB_PATH=${CHAT_DB_PATH:-$run_dir/data/chat.sqlite}
export LOG_LEVEL=${LOG_LEVEL:-info}
export CHAT_PUBLIC_DIR=${CHAT_PUBLIC_DIR:-$root/Services/gateway/Public}
# One signing key for every gateway, kept in the run folder so tokens survive restarts.
[ -s "$run_dir/jwt-secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > "$run_dir/jwt-secret"
export CHAT_JWT_SECRET=${CHAT_JWT_SECRET:-$(cat "$run_dir/jwt-secret")}

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  if [ -n "${redis_pid:-}" ]; then
    redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || kill -TERM "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
  fi
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
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" ping >/dev/null 2>&1 || { echo "redis-server did not start; see $run_dir/logs/redis.log"; exit 1; }
echo "redis        ready  $CHAT_REDIS_URL (append-only files in $run_dir/redis)"

start() { # name log [env...]
  local name=$1 log=$2; shift 2
  env "$@" "$bin/$name" >"$log" 2>&1 &
  pids+=($!)
  if wait_for_line "$log" "\] ready" 30; then
    printf '%-12s ready  (log %s)\n' "$name" "$log"
  else
    echo "$name did not become ready; its log:"; tail -20 "$log"; exit 1
  fi
}

start chat-messages "$run_dir/logs/messages.log"
start chat-presence "$run_dir/logs/presence.log"
start chat-retention "$run_dir/logs/retention.log"
for i in $(seq 1 "$gateways"); do
  port=$(( http_port + i - 1 ))
  start chat-gateway "$run_dir/logs/gateway-$i.log" CHAT_HTTP_PORT="$port" CHAT_GATEWAY_ID="gw-local-$i"
done

# Demo accounts: DEMO=1 (the default here) gives them the password "password";
# DEMO=0 generates one per account and prints it once.
if [ "${DEMO:-1}" = "1" ]; then seed_flags=--demo-password; else seed_flags=; fi
"$bin/chatctl" seed-demo $seed_flags | sed 's/^/  account  /'

echo "web and API: http://${CHAT_HTTP_HOST:-127.0.0.1}:$http_port  (health: /healthz, API description: /api/openapi.json)"
echo "all services ready; Ctrl-C stops them"
wait -n "${pids[@]}" 2>/dev/null
echo "a service exited unexpectedly; see $run_dir/logs/"
exit 1
