#!/usr/bin/env bash
# A self-signed certificate for localhost in certs/, for trying the compose stack.
# Use a real certificate (your CA, or ACME) anywhere else.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p certs
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout certs/tls.key -out certs/tls.crt
chmod 600 certs/tls.key
echo "wrote $(pwd)/certs/tls.crt and tls.key"
