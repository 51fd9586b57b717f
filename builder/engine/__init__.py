"""The Docker engine: every request sglbuild makes to it, and the one place its errors are translated.

One component per group of Docker verbs, as the CLI groups them: ``engine.images``,
``engine.containers``, ``engine.builds`` (classic), ``engine.buildkit`` (``docker buildx``),
``engine.networks``, ``engine.volumes``; :mod:`.export` reads what ``docker save`` writes and :mod:`.archives`
writes what ``docker load`` reads. Each request runs inside :func:`guard`, which turns
docker-py's and requests' exceptions into the project's own hierarchy, so an engine that
refuses a request is one line and an exit code, never a traceback. Nothing outside this
package imports docker-py or reads its objects: the components hand back :mod:`.records`.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import docker
import docker.errors
import requests.exceptions

from ..errors import EngineUnavailable, ImageNotFound
from .buildkit import BuildKit
from .builds import Builds
from .containers import Containers
from .guard import guard, translate
from .images import Images
from .networks import Networks
from .records import ImageRecord
from .volumes import Volumes

__all__ = ["Engine", "connect", "guard", "translate", "requested_builder"]


class Engine:
    """A connected engine. ``client`` is docker-py's, for this package's components only."""

    def __init__(self, client: docker.DockerClient, where: str) -> None:
        self.client, self.where = client, where
        self.images = Images(self)
        self.containers = Containers(self)
        self.builds = Builds(self)
        self.buildkit = BuildKit(self)
        self.networks = Networks(self)
        self.volumes = Volumes(self)

    @functools.cached_property
    def info(self) -> dict[str, Any]:
        with guard("a request for the engine's information"):
            return self.client.info()

    @property
    def has_nvidia_runtime(self) -> bool:
        return "nvidia" in (self.info.get("Runtimes") or {})

    @property
    def root_dir(self) -> str:
        return self.info.get("DockerRootDir", "/var/lib/docker")

    @property
    def version(self) -> str:
        return self.info.get("ServerVersion", "unknown")

    @property
    def platform(self) -> str:
        """The engine's own platform (linux/amd64, linux/arm64): what it runs without emulation."""
        from ..contracts import platform_of_machine

        return platform_of_machine(self.info.get("Architecture", "x86_64"))

    def registry(self, repo: str) -> tuple[Any, str]:
        """A client for REPO's registry, as this engine would reach it (its insecure registries over HTTP, its
        login's credentials), and the repository's name there."""
        import ipaddress

        import docker.auth

        from ..oci import Registry, split_repo

        host, name = split_repo(repo)
        config = self.info.get("RegistryConfig") or {}
        insecure = (config.get("IndexConfigs") or {}).get(host, {}).get("Secure") is False
        address = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        try:
            ip = ipaddress.ip_address(address if address != "localhost" else "127.0.0.1")
            insecure = insecure or any(ip in ipaddress.ip_network(c) for c in config.get("InsecureRegistryCIDRs") or [])
        except ValueError:
            pass
        auth = docker.auth.resolve_authconfig(docker.auth.load_config(), host) or {}
        credentials = (auth["username"], auth["password"]) if auth.get("username") and auth.get("password") else None
        return Registry(host, insecure=insecure, credentials=credentials), name

    def image_for(self, ref: str, platform: str | None = None) -> ImageRecord:
        """REF here, or pulled by digest; for PLATFORM, an index's own image for it, pulled by its manifest's digest (only
        that image: the index's digest would name one local image per platform, which the legacy store refuses)."""
        from ..oci import describe

        here = self.images.find(ref)
        if platform and "@sha256:" in ref and (here is None or here.platform != platform):
            repo, _, digest = ref.partition("@")
            client, name = self.registry(repo)
            found = describe(client, name, digest)
            if found is not None and found.is_index:
                if platform not in found.images:
                    raise ImageNotFound(f"{ref} holds no {platform} image (it holds {', '.join(sorted(found.images))})")
                ref = f"{repo}@{found.images[platform].digest}"
        return self.images.get_or_pull(ref, platform)

    @property
    def containerd_store(self) -> bool:
        """Whether images live in containerd's content store (Docker 29's default) rather than the legacy one."""
        return "io.containerd.snapshotter" in str(self.info.get("DriverStatus") or "")

    @functools.cached_property
    def builder(self) -> str:
        """How sglbuild builds on this engine: "buildkit" where it has BuildKit 0.13 and buildx answers, else "classic"."""
        return requested_builder() or ("buildkit" if self.buildkit.supported() else "classic")


BUILDERS = ("classic", "buildkit")


def requested_builder() -> str | None:
    """The build path ``SGLBUILD_BUILDER`` asks for ("classic" or "buildkit"), or None to let the engine decide."""
    chosen = os.environ.get("SGLBUILD_BUILDER", "auto")
    return chosen if chosen in BUILDERS else None


def connect(timeout: int = 600) -> Engine:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        raise EngineUnavailable(
            f"no Docker engine answers at {where}",
            "start one ('systemctl start docker', or 'dockerd &' as root) or set DOCKER_HOST",
        ) from None
    return Engine(client, where)
