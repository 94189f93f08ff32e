#!/usr/bin/env bash
# Validates deploy/ (compose, Kubernetes, systemd) against the executables and variables
# the code defines; see Tests/deploy/check_deploy.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python3 -c 'import yaml' 2>/dev/null || { echo "check-deploy: python3-yaml is missing (make deps installs it)"; exit 1; }
exec python3 "$root/Tests/deploy/check_deploy.py"
