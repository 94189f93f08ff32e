#!/usr/bin/env bash
# Runs the local launcher (deploy/local/run.sh) in the background, waits until every
# service is ready, stops it with SIGINT as Ctrl-C would, and checks that no process
# it started is left behind.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# ADMIN_PORT=0: the services' admin endpoints on free ports (read back from the output).
out="$work/launcher.out"

# A background job starts with SIGINT ignored (and bash cannot trap a signal ignored on
# entry), so restore the default first, as a terminal's Ctrl-C would find it.
RUN_DIR="$work/run" REDIS_PORT="$port" CHAT_HTTP_PORT=0 ADMIN_PORT=0 GATEWAYS=2 setsid python3 -c \
  'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])' \
  "$root/deploy/local/run.sh" >"$out" 2>&1 &
launcher=$!

fail() { echo "smoke-run: FAIL: $1"; cat "$out"; kill -KILL -- -"$launcher" 2>/dev/null; rm -rf "$work"; echo "0 passed, 1 failed"; exit 1; }
# has PATTERN URL [curl options]: the answer read whole, then searched. (`curl | grep -q`
# fails under pipefail whenever grep stops reading before curl has written everything: a
# gateway's /metrics is large enough for that race, and a CI run lost it once.)
has() { local body; body=$(curl -fsS "${@:2}") && grep -q -- "$1" <<<"$body"; }

for _ in $(seq 1 600); do grep -q "all services ready" "$out" && break; kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
grep -q "all services ready" "$out" || fail "the stack did not come up"
[ "$(grep -c 'chat-gateway.*ready' "$out")" -eq 2 ] || fail "GATEWAYS=2 did not start two gateways"
redis-cli -p "$port" xinfo groups chat:commands | grep -q messages || fail "the messages consumer group is missing"
grep -q "account  doctor@clinic.com" "$out" || fail "the demo accounts were not seeded"
gateway_port=$(grep -o 'http.address=[^ ]*' "$work/run/logs/gateway-1.log" | head -1 | grep -o '[0-9]*$')
has ready "http://127.0.0.1:$gateway_port/readyz" || fail "/readyz of the first gateway did not answer ready"
has "<title>" "http://127.0.0.1:$gateway_port/" || fail "the web page did not load"
has "^chat_gateway_connections" "http://127.0.0.1:$gateway_port/metrics" || fail "the gateway has no metrics"
grep -q "web and API: http://127.0.0.1:$gateway_port" "$out" || fail "the launcher did not print the gateway's URL"
for service in chat-messages chat-presence chat-retention; do
  metrics=$(grep "^$service .*ready" "$out" | grep -o 'http://[^ ]*/metrics')
  [ -n "$metrics" ] || fail "$service did not print its admin address"
  has ready "${metrics%/metrics}/readyz" || fail "$service: /readyz did not answer ready"
  has '^process_resident_memory_bytes' "$metrics" || fail "$service: /metrics has no process metrics"
done
started=$(awk '{print $2}' "$work/run/pids")
[ "$(echo "$started" | wc -w)" -eq 6 ] || fail "run/pids should list redis and 5 services: $started"
token=$(curl -fsS -X POST "http://127.0.0.1:$gateway_port/api/auth/login" -H 'content-type: application/json' \
  -d '{"email":"doctor@clinic.com","password":"password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') \
  || fail "the demo doctor could not log in"
has "Dr. Sarah Kim" "http://127.0.0.1:$gateway_port/api/me" -H "authorization: Bearer $token" || fail "/api/me did not answer"

kill -INT "$launcher"
for _ in $(seq 1 100); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
kill -0 "$launcher" 2>/dev/null && fail "the launcher did not stop within 10 s of SIGINT"
leftover=$(for pid in $started; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done; pgrep -f "redis-server 127.0.0.1:$port")
[ -z "$leftover" ] || fail "processes left behind: $leftover"
grep -q "^stopped" "$out" || fail "the launcher did not report a clean stop"
rm -rf "$work"
echo "smoke-run: make run's launcher starts every service and stops cleanly"
echo "1 passed, 0 failed"
