#!/usr/bin/env bash
# A registry on loopback for the local pipeline and the tests: Debian's docker-registry.
# Usage: ci/registry.sh [PORT]   (prints HOST:PORT once it answers; REGISTRY_HOST, default 127.0.0.1, is
# the address it listens on: 10.200.26.1 for the second engine of ci/engine.sh, which has its own network)
set -euo pipefail
port=${1:-5000}
addr=${REGISTRY_HOST:-127.0.0.1}:$port
answers() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(f"http://{sys.argv[1]}/v2/", timeout=2)' "$addr" 2>/dev/null; }
if answers; then echo "$addr"; exit 0; fi
if ! command -v docker-registry >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  else
    echo "sglbuild: error: docker-registry is not installed: apt-get install docker-registry" >&2; exit 3
  fi
fi
dir=${REGISTRY_DIR:-/var/lib/sglbuild-registry/$port}
mkdir -p "$dir"
cat > "$dir/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $addr
log:
  level: error
YML
nohup docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 &
echo $! > "$dir/registry.pid"  # stop it with: kill "$(cat "$dir/registry.pid")"
for _ in $(seq 1 50); do answers && { echo "$addr"; exit 0; }; sleep 0.2; done
echo "sglbuild: error: the registry did not start: see $dir/registry.log" >&2
exit 3
