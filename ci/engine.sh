#!/usr/bin/env bash
# A second Docker engine beside the host's: Debian 13's docker.io (26.1.5), docker-buildx and
# containerd, in a chroot of a trixie root filesystem, in its own network namespace.
#
#   ci/engine.sh up [legacy|containerd]   start it (default: containerd, the image store Docker 29 makes the default)
#   ci/engine.sh down                     stop it and remove its mounts and namespace (its data stays for next time)
#   ci/engine.sh env                      print the DOCKER_HOST to use it (and where its buildx plugin is)
#
# Why this way: privileged containers cannot start on every machine ("unable to apply caps"), so
# docker-in-docker is out; and a second dockerd in the host's network namespace can take the
# host engine's docker0 bridge away. In its own namespace it reaches the host (a registry there)
# through a veth pair: the host is 10.200.26.1, the engine 10.200.26.2.
set -euo pipefail

dir=${SGLBUILD_ENGINE_DIR:-/var/lib/sglbuild-engine26}
root=$dir/rootfs
ns=sglbuild26
sock=$root/run/dsock/docker.sock
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { echo "engine: $*" >&2; }
answers() { DOCKER_HOST=unix://$sock /usr/bin/docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

rootfs() {
  [ -x "$root/usr/sbin/dockerd" ] && return
  command -v mmdebstrap >/dev/null || { echo "sglbuild: error: mmdebstrap is not installed: apt-get install mmdebstrap" >&2; exit 3; }
  say "making the trixie root filesystem with docker.io, docker-buildx and containerd (about 20 s) ..."
  mkdir -p "$root"
  mmdebstrap --quiet --variant=minbase --include=docker.io,docker-buildx,containerd,iptables,ca-certificates,procps \
    trixie "$dir/rootfs.tar" "$mirror"
  tar -C "$root" -xf "$dir/rootfs.tar"
  rm -f "$dir/rootfs.tar"
}

mounts() {
  mountpoint -q "$root" || mount --bind "$root" "$root"  # else 'docker import' fails: remount /: invalid argument
  mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
  mountpoint -q "$root/sys" || mount --rbind /sys "$root/sys"
  mountpoint -q "$root/dev" || mount --rbind /dev "$root/dev"
}

network() {
  ip netns list | grep -qw "$ns" || ip netns add "$ns"
  if ! ip link show veth26h >/dev/null 2>&1; then
    ip link add veth26h type veth peer name veth26c
    ip link set veth26c netns "$ns"
    ip addr add 10.200.26.1/24 dev veth26h
    ip link set veth26h up
    ip netns exec "$ns" ip addr add 10.200.26.2/24 dev veth26c
    ip netns exec "$ns" ip link set veth26c up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip route add default via 10.200.26.1
  fi
}

up() {
  local store=${1:-containerd}
  [ "$(id -u)" -eq 0 ] || { echo "sglbuild: error: the second engine needs root (mounts, a network namespace)" >&2; exit 3; }
  if answers; then say "already running: DOCKER_HOST=unix://$sock"; return; fi
  rootfs
  mounts
  network
  mkdir -p "$root/etc/docker" "$root/run/dsock"
  # No name server answers inside the namespace: say so at once (a refused query), instead of letting every
  # image lookup BuildKit tries on Docker Hub wait 20 s for a time-out.
  echo "nameserver 127.0.0.1" > "$root/etc/resolv.conf"
  # The registry on the host is plain HTTP on 10.200.26.1; the engine must be told it may use it.
  # With the containerd image store, containerd's own overlayfs snapshotter stores the layers.
  local store_config='"storage-driver": "overlay2"'
  [ "$store" = containerd ] && store_config='"features": {"containerd-snapshotter": true}'
  cat > "$root/etc/docker/daemon.json" <<JSON
{$store_config, "insecure-registries": ["10.200.26.0/24"]}
JSON
  say "starting containerd and dockerd 26 ($store image store) in network namespace $ns ..."
  ip netns exec "$ns" chroot "$root" sh -c '
    mkdir -p /run/containerd /var/lib/docker26 /run/docker26
    nohup containerd > /var/log/containerd.log 2>&1 &
    for i in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.2; done
    nohup dockerd -H unix:///run/dsock/docker.sock --data-root /var/lib/docker26 --exec-root /run/docker26 \
      --pidfile /run/docker26.pid --bridge none --iptables=false --ip6tables=false \
      --containerd /run/containerd/containerd.sock > /var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do answers && break; sleep 1; done
  answers || { echo "sglbuild: error: the second engine did not start: see $root/var/log/dockerd.log" >&2; exit 3; }
  # The host's newer docker client drives buildx through the plugin from the same packages.
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$root/usr/libexec/docker/cli-plugins/docker-buildx" "$HOME/.docker/cli-plugins/docker-buildx"
  say "up: DOCKER_HOST=unix://$sock ($(DOCKER_HOST=unix://$sock /usr/bin/docker version --format '{{.Server.Version}}'))"
}

down() {
  if [ -f "$root/run/docker26.pid" ]; then
    kill "$(cat "$root/run/docker26.pid")" 2>/dev/null || true
    for _ in $(seq 1 30); do answers || break; sleep 1; done
  fi
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  sleep 1
  for m in dev sys proc; do mountpoint -q "$root/$m" && umount -R "$root/$m" || true; done
  mountpoint -q "$root" && umount "$root" || true
  ip link del veth26h 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  say "down"
}

case "${1:-}" in
  up) up "${2:-containerd}" ;;
  down) down ;;
  env) echo "DOCKER_HOST=unix://$sock" ;;
  *) echo "usage: ci/engine.sh up [legacy|containerd] | down | env" >&2; exit 2 ;;
esac
