#!/usr/bin/env bash
# Browser tests: the local stack (deploy/local/run.sh) and the web client driven by
# headless Chromium through selenium (Tests/browser/web_test.py). Installs chromium and
# chromium-driver with apt and selenium with pip (into .build/e2e-venv) when missing.
# `SCREENSHOTS=docs scripts/e2e-browser.sh` also saves the pictures of docs/.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.build/e2e-venv"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: chromium chromium-driver"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null; } \
    || { echo "browser: cannot install chromium"; exit 1; }
fi
if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv --clear "$venv" || { echo "browser: cannot create a virtualenv"; exit 1; }
  "$venv/bin/pip" install -q "selenium>=4.15" || { echo "browser: pip install failed"; exit 1; }
fi

work=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out="$work/launcher.out"
RUN_DIR="$work/run" REDIS_PORT="$redis_port" CHAT_HTTP_PORT=0 GATEWAYS=1 setsid "$root/deploy/local/run.sh" >"$out" 2>&1 &
launcher=$!
cleanup() { kill -TERM "$launcher" 2>/dev/null; for _ in $(seq 1 100); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done; kill -KILL -- -"$launcher" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

for _ in $(seq 1 600); do grep -q "all services ready" "$out" && break; kill -0 "$launcher" 2>/dev/null || break; sleep 0.1; done
grep -q "all services ready" "$out" || { echo "browser: the stack did not come up"; cat "$out"; echo "0 passed, 1 failed"; exit 1; }
port=$(grep -o 'http.address=[^ ]*' "$work/run/logs/gateway-1.log" | head -1 | grep -o '[0-9]*$')
echo "browser: headless Chromium against http://127.0.0.1:$port"
args=("http://127.0.0.1:$port")
[ -n "${SCREENSHOTS:-}" ] && args+=(--screenshots "$SCREENSHOTS")
REDIS_PORT="$redis_port" "$venv/bin/python" "$root/Tests/browser/web_test.py" "${args[@]}"
status=$?
[ $status -eq 0 ] || { echo "gateway log:"; tail -n 30 "$work/run/logs/gateway-1.log"; }
exit $status
