#!/usr/bin/env bash
# Installs the Debian packages the build, the services and the tests need, when missing.
set -euo pipefail

packages=(redis-server redis-tools libhiredis-dev libsqlite3-dev pkg-config curl openssl python3-yaml faketime)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian's redis-server package starts a system instance on 6379; nothing here uses it.
command -v swift >/dev/null || { echo "swift is not on PATH (expected the Swift 6 toolchain, e.g. /opt/swift/usr/bin)"; exit 1; }
