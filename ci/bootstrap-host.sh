#!/usr/bin/env bash
# Bring up what sglbuild needs on a Debian/Ubuntu machine: a Docker engine, mmdebstrap, and QEMU's
# user-mode emulators with their binfmt_misc handlers (arm64 images built and checked on x86-64).
# As root it installs what is missing and starts dockerd when no engine answers;
# otherwise it says in one line what to install or start.
set -euo pipefail

need=()
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -e /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
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

# The kernel runs arm64 binaries through QEMU once binfmt_misc is mounted and the handlers registered
# (Debian's qemu-user-static registers them with the F flag, so they work inside containers).
if [ "$(uname -m)" != aarch64 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "sglbuild: error: no binfmt_misc handler for arm64: run 'sudo update-binfmts --enable qemu-aarch64' (after installing qemu-user-static and binfmt-support)" >&2
    exit 3
  fi
  [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || update-binfmts --import qemu-aarch64 >/dev/null
fi
