#!/usr/bin/env bash
# `make bench`: starts the stack as `make run` does (release build, its own redis-server,
# one gateway) with virtual users seeded and per-user limits lifted, runs the standard
# workloads of `chat-bench`, and writes the results, the machine and the exact commands
# to BENCHMARKS.md (between the load-tool markers). WORKLOADS=... runs a subset.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
configuration=${CONFIGURATION:-release}
bench="$root/.build/$configuration/chat-bench"
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
http_port=$(free_port)
out="$work/results.md"
workloads=${WORKLOADS:-"pairs-closed group group-pages group-returning group-readers group-large-readers idle churn history pairs-5000 pairs-10000 group-herd purge store"}

# Tens of thousands of sockets need as many descriptors in the gateway and the tool: as
# many as the hard limit allows (a container may cap it; the idle run is sized below it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
idle_sockets=${IDLE_SOCKETS:-$(( fd_limit < 20500 ? fd_limit - 1000 : 20000 ))}

# What the build (or anything else) left dirty in the page cache the kernel writes back
# about 30 s later (vm.dirty_expire_centisecs): a relinked build is ~300 MB at once on the
# shared disk, the store's commits wait behind it, and a run shows a stall that is the
# build's (BENCHMARKS.md, fourteenth round). Written back now instead.
sync
mkdir -p "$work/run/data"
"$bench" seed --database "$work/run/data/chat.sqlite" --users 400 >/dev/null || exit 1

export RUN_DIR="$work/run" REDIS_PORT="$redis_port" CHAT_HTTP_PORT="$http_port" ADMIN_PORT=0 GATEWAYS=1 CONFIGURATION="$configuration"
# The load is many messages per user: lift the per-user limits; shorter pings so the idle
# run sees several; a deeper socket queue for the replay-free fan-out of the group run.
export CHAT_MESSAGE_RATE=1000000 CHAT_MESSAGE_BURST=1000000 CHAT_PING_INTERVAL=5s CHAT_PING_TIMEOUT=10s
setsid "$root/deploy/local/run.sh" >"$work/launcher.out" 2>&1 &
launcher=$!
stop() { kill -TERM "$launcher" 2>/dev/null; wait "$launcher" 2>/dev/null; rm -rf "$work"; }
trap stop EXIT
trap "exit 1" INT TERM
for _ in $(seq 1 600); do grep -q "all services ready" "$work/launcher.out" && break; sleep 0.1; done
grep -q "all services ready" "$work/launcher.out" || { cat "$work/launcher.out"; exit 1; }

common=(--gateway "http://127.0.0.1:$http_port" --run-dir "$work/run")
# Each workload starts with the store caught up (an overload run leaves a backlog behind).
caught_up() {
  for _ in $(seq 1 1200); do
    info=$(redis-cli -p "$redis_port" XINFO GROUPS chat:commands 2>/dev/null | tr '\n' ' ')
    echo "$info" | grep -Eq 'pending 0 .*lag 0' && return 0
    sleep 0.5
  done
  echo "bench: the store did not catch up" >&2
}
run() {
  caught_up; sleep 3; caught_up; echo "running: chat-bench $*" >&2
  "$bench" "$@" "${common[@]}" | tee -a "$out" || echo "bench: chat-bench $1 failed (lost, duplicated or out-of-order messages are in its table)" >&2
}
for workload in $workloads; do
  case $workload in
    pairs-closed) run pairs --pairs 100 --messages 200 --window 16 ;;
    pairs-5000) run pairs --pairs 100 --rate 5000 --duration 10 ;;
    pairs-10000) run pairs --pairs 100 --rate 10000 --duration 10 ;;
    group) run group --members 50 --rate 200 --duration 10 ;;
    group-pages) run group --members 50 --rate 200 --duration 10 --page-loads 10 ;;
    group-returning) run group --members 50 --rate 200 --duration 10 --page-loads 10 --backlogs 50 --backlog-messages 4 --returning ;;
    group-readers) run group --members 50 --rate 200 --duration 10 --readers 49 ;;
    # A clinic's all-staff group: few messages, many readers (a receipt per covered sender).
    group-large-readers) run group --members 256 --rate 20 --duration 15 --readers 255 ;;
    # A gateway gone: 2,000 sockets of 200 users (each in three groups of all 200) back at once.
    group-herd) run group --members 50 --rate 200 --duration 15 --reconnects 2000 --page-users 200 --backlogs 3 --backlog-messages 4 ;;
    idle) run idle --sockets "$idle_sockets" --users 200 --duration 20 --ping-interval 5 ;;
    churn) run churn --rate 200 --duration 10 ;;
    history) run history --messages 1000 --clients 8 --requests 2000 ;;
    purge) echo "running: chat-bench purge --messages 100000" >&2
           { echo "### sends while retention purges 100,000 messages"; echo; echo '`chat-bench purge --messages 100000` (its own Redis and store)'; echo; "$bench" purge --messages 100000; echo; } | tee -a "$out" ;;
    store) echo "running: chat-bench store" >&2
           { echo "### the store alone: sends through MessageStore.apply"; echo; echo '`chat-bench store` (a fresh SQLite file, batches of 256, no Redis)'; echo; "$bench" store; echo; } | tee -a "$out" ;;
  esac
done

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), redis-server $(redis-server --version | cut -d' ' -f3 | sed 's/v=//'), $(swift --version 2>/dev/null | head -1 | sed 's/.*Swift version \([0-9.]*\).*/Swift \1/'), $configuration build, $(date -u +%Y-%m-%d)"
python3 - "$root/BENCHMARKS.md" "$out" "$machine" "$workloads" "$fd_limit" <<'PY'
import sys
path, results, machine, workloads, fdlimit = sys.argv[1:]
text = open(path).read()
begin, end = "<!-- load-tool:begin -->", "<!-- load-tool:end -->"
body = (f"{begin}\n\nMachine: {machine}. Reproduce: `make bench` (or `WORKLOADS=\"{workloads}\" scripts/bench.sh`"
        f" after a release build). The stack is `make run`'s launcher with one gateway, `CHAT_MESSAGE_RATE` lifted, "
        f"`CHAT_PING_INTERVAL=5s`; the load tool runs on the same two cores. Open files: {fdlimit} per process (the hard limit here).\n\n" + open(results).read() + f"\n{end}")
if begin in text:
    text = text[:text.index(begin)] + body + text[text.index(end) + len(end):]
else:
    text = text.rstrip() + "\n\n## The load tool: `chat-bench` against the running stack\n\n" + body + "\n"
open(path, "w").write(text)
PY
echo "bench: results written to BENCHMARKS.md"
