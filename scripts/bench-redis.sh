#!/usr/bin/env bash
# Runs `chat-bench redis` (release build) and prints the machine next to the table,
# ready to paste into BENCHMARKS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(redis-server --version | cut -d' ' -f3), $(date -u +%Y-%m-%d)"
echo "command: .build/release/chat-bench redis --rounds ${ROUNDS:-5} --requests ${REQUESTS:-400000}"
"$root/.build/release/chat-bench" redis --rounds "${ROUNDS:-5}" --requests "${REQUESTS:-400000}"
