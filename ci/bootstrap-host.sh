#!/usr/bin/env bash
# Bring up what sglbuild needs on a Debian/Ubuntu machine: a Docker engine, mmdebstrap, and QEMU's
# user-mode emulator for arm64 with its binfmt_misc handler (arm64 images built and checked on x86-64).
# As root it installs what is missing and starts dockerd when no engine answers;
# otherwise it says in one line what to install or start.
set -euo pipefail

need=()
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
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

# The kernel runs arm64 binaries through QEMU once binfmt_misc is mounted and a handler registered. The handler
# is Debian 13's QEMU (10.0, statically linked, from trixie's signed index, kept under /usr/local/lib/sglbuild):
# bookworm's QEMU 7.2 dies with SIGSEGV importing torch 2.14's aarch64 build (after oneDNN's CPU probe), so
# it can build an arm64 image but not smoke-test or verify one. Registered with the F flag: it works in containers.
qemu_dir=/usr/local/lib/sglbuild/qemu
if [ "$(uname -m)" != aarch64 ] && ! grep -qs "^interpreter $qemu_dir/" /proc/sys/fs/binfmt_misc/qemu-aarch64; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "sglbuild: error: no arm64 emulation of QEMU 9.1 or later: run ci/bootstrap-host.sh as root (it installs Debian 13's qemu-user beside the system's)" >&2
    exit 3
  fi
  if [ ! -x "$qemu_dir/aarch64-binfmt-P" ]; then
    echo "installing Debian 13's qemu-user (arm64 emulation) in $qemu_dir ..." >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/lists/partial" "$tmp/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" > "$tmp/sources.list"
    apt_tmp=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$tmp/lists"
             -o "Dir::Cache::Archives=$tmp/archives" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o APT::Architecture=amd64 -o APT::Sandbox::User=root)
    apt-get "${apt_tmp[@]}" update -qq  # the signed index: apt checks the .deb's sha256 against it
    (cd "$tmp" && apt-get "${apt_tmp[@]}" download -qq qemu-user)
    dpkg-deb -x "$tmp"/qemu-user_*.deb "$tmp/x"
    mkdir -p "$qemu_dir"
    install -m 0755 "$tmp/x/usr/bin/qemu-aarch64" "$qemu_dir/qemu-aarch64"
    ln -sfn qemu-aarch64 "$qemu_dir/aarch64-binfmt-P"  # QEMU keeps argv[0] (the P flag) when named so
  fi
  [ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64
  printf '%s' ':qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$qemu_dir/aarch64-binfmt-P"':OPF' \
    > /proc/sys/fs/binfmt_misc/register
fi
