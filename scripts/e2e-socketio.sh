#!/usr/bin/env bash
# End-to-end: the local stack with two gateways (deploy/local/run.sh), driven by a stock
# Socket.IO client (python-socketio from pip, in a virtualenv under .build/) over
# long-polling, polling upgraded to WebSocket, and WebSocket only.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.build/e2e-venv"
if ! "$venv/bin/python" -c 'import socketio, requests, websocket' 2>/dev/null; then
  python3 -m venv --clear "$venv" 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && python3 -m venv --clear "$venv"; } || { echo "e2e: cannot create a virtualenv"; exit 1; }
  "$venv/bin/pip" install -q "python-socketio[client]>=5,<6" "websocket-client>=1.6" "requests>=2.28" || { echo "e2e: pip install failed"; exit 1; }
fi

work=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out="$work/launcher.out"
RUN_DIR="$work/run" REDIS_PORT="$redis_port" CHAT_HTTP_PORT=0 GATEWAYS=2 setsid "$root/deploy/local/run.sh" >"$out" 2>&1 &
launcher=$!
cleanup() { kill -TERM "$launcher" 2>/dev/null; for _ in $(seq 1 100); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done; kill -KILL -- -"$launcher" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

for _ in $(seq 1 600); do grep -q "all services ready" "$out" && break; kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
grep -q "all services ready" "$out" || { echo "e2e: the stack did not come up"; cat "$out"; echo "0 passed, 1 failed"; exit 1; }
port() { grep -o 'http.address=[^ ]*' "$work/run/logs/gateway-$1.log" | head -1 | grep -o '[0-9]*$'; }
echo "e2e: python-socketio against two gateways"
"$venv/bin/python" "$root/Tests/e2e/socketio_e2e.py" "http://127.0.0.1:$(port 1)" "http://127.0.0.1:$(port 2)"
status=$?
[ $status -eq 0 ] || { echo "gateway logs:"; tail -n 30 "$work/run/logs/gateway-1.log" "$work/run/logs/gateway-2.log"; }
exit $status
