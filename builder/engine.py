"""The Docker engine, through docker-py: connecting, and small helpers the steps share."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.images import Image

from .errors import EngineUnavailable

BUILD_NETWORK = "sglbuild-build"
LABEL_MANAGED = "io.sglbuild.managed"


def connect(timeout: int = 600) -> docker.DockerClient:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError):
        raise EngineUnavailable(
            f"no Docker engine answers at {where}",
            "start one ('systemctl start docker', or 'dockerd &' as root) or set DOCKER_HOST",
        ) from None
    return client


def find_image(client: docker.DockerClient, ref: str) -> Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def split_ref(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        return ref, "latest"
    return repo, tag


def tag_image(client: docker.DockerClient, image_id: str, ref: str, *, drop_replaced: bool = False) -> None:
    """Point REF at IMAGE_ID. ``drop_replaced``: remove the image REF pointed at before if
    that left it untagged and sglbuild made it (a --no-cache rebuild would leave it dangling)."""
    previous = find_image(client, ref) if drop_replaced else None
    repo, tag = split_ref(ref)
    client.api.tag(image_id, repo, tag, force=True)
    if previous is None or previous.id == image_id:
        return
    try:
        previous.reload()
        if not previous.tags and previous.labels.get(LABEL_MANAGED):
            # Refused while a child image still uses it; the last stage's removal takes its untagged parents.
            client.images.remove(previous.id)
    except docker.errors.APIError:
        pass


def build_network(client: docker.DockerClient) -> tuple[str, str]:
    """An internal network: the build reaches this host's wheel server and nothing else."""
    try:
        net = client.networks.get(BUILD_NETWORK)
    except docker.errors.NotFound:
        net = client.networks.create(BUILD_NETWORK, driver="bridge", internal=True, labels={LABEL_MANAGED: "true"})
        net.reload()
    gateway = net.attrs["IPAM"]["Config"][0]["Gateway"]
    return net.name, gateway


def context_tar(files: dict[str, str]) -> io.BytesIO:
    """A build context holding only the given small text files (never wheels)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def run_in_image(client: docker.DockerClient, image: str, command: list[str] | str, *, network: bool = False,
                 environment: dict[str, str] | None = None, entrypoint: Any = None,
                 volumes: dict | None = None, device_requests: list | None = None) -> tuple[int, str]:
    """Run a command in a throwaway container (no network by default); returns exit code and output."""
    container = client.containers.create(image, command, entrypoint=entrypoint, network_disabled=not network,
                                         environment=environment or {}, labels={LABEL_MANAGED: "true"},
                                         volumes=volumes or {}, device_requests=device_requests)
    try:
        container.start()
        code = container.wait()["StatusCode"]
        out = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return code, out
    finally:
        container.remove(force=True)


def git_revision(root: Path) -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")

