#!/usr/bin/env bash
# Bring up what sglbuild needs on a Debian/Ubuntu machine: a Docker engine and mmdebstrap.
# As root it installs what is missing and starts dockerd when no engine answers;
# otherwise it says in one line what to install or start.
set -euo pipefail

need=()
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
# Debian's own client, which also drives BuildKit (used only by the benchmark's naive build).
[ -x /usr/bin/docker ] || { [[ " ${need[*]-} " == *" docker.io "* ]] || need+=(docker.io); }

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "sglbuild: error: missing ${need[*]}: install them (e.g. 'sudo apt-get install ${need[*]}') and run again" >&2
    exit 3
  fi
  echo "installing ${need[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

engine_answers() { /usr/bin/docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if ! engine_answers; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "sglbuild: error: no Docker engine answers: start it (e.g. 'sudo systemctl start docker') and run again" >&2
    exit 3
  fi
  echo "starting dockerd ..." >&2
  nohup dockerd >/var/log/sglbuild-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    engine_answers && break
    sleep 1
  done
  engine_answers || { echo "sglbuild: error: dockerd did not start: see /var/log/sglbuild-dockerd.log" >&2; exit 3; }
fi
