"""The Docker engine: every request sglbuild makes to it, and the one place its errors are translated.

One component per group of Docker verbs, as the CLI groups them: ``engine.images``,
``engine.containers``, ``engine.builds``, ``engine.networks``. Each request runs inside
:func:`guard`, which turns docker-py's and requests' exceptions into the project's own
hierarchy, so an engine that refuses a request is one line and an exit code, never a
traceback. Nothing outside this package imports docker-py.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from typing import Any, Iterator

import docker
import docker.errors
import requests.exceptions

from ..errors import DiskFull, EngineError, EngineUnavailable, ImageNotFound, InputError, SglbuildError


def translate(exc: BaseException, what: str) -> SglbuildError | None:
    """The project's error for an exception docker-py (or requests under it) raised; None if not theirs."""
    if isinstance(exc, SglbuildError):
        return exc
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageNotFound(f"{what}: no such image on this engine", "build it, or pull it by digest")
    if isinstance(exc, docker.errors.APIError):
        why = " ".join(str(exc.explanation or exc).split())
        if "no space left on device" in why.lower():
            return DiskFull(f"{what}: the engine ran out of disk: {why}", "free space (sglbuild gc) and run again")
        if "invalid reference format" in why:
            return InputError(f"{what}: {why}", "image references are lowercase: [REGISTRY/]REPO[:TAG|@sha256:DIGEST]")
        return EngineError(f"the engine refused {what}: {why}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return EngineUnavailable(f"the Docker engine stopped answering during {what}", "check that dockerd runs, then run again")
    if isinstance(exc, requests.exceptions.Timeout):
        return EngineError(f"the Docker engine did not answer in time during {what}")
    if isinstance(exc, (docker.errors.DockerException, requests.exceptions.RequestException)):
        return EngineError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())}")
    return None


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Run engine requests; their failures leave as the project's errors, saying WHAT was asked."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it was
        ours = translate(exc, what)
        if ours is None or ours is exc:
            raise
        raise ours from None


class Engine:
    """A connected engine. ``client`` is docker-py's, for this package's components only."""

    def __init__(self, client: docker.DockerClient, where: str) -> None:
        from .builds import Builds
        from .buildkit import BuildKit
        from .containers import Containers
        from .images import Images
        from .networks import Networks

        self.client, self.where = client, where
        self.images = Images(self)
        self.containers = Containers(self)
        self.builds = Builds(self)
        self.buildkit = BuildKit(self)
        self.networks = Networks(self)

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
    def containerd_store(self) -> bool:
        """Whether images live in containerd's content store (Docker 29's default) rather than the legacy one."""
        return "io.containerd.snapshotter" in str(self.info.get("DriverStatus") or "")

    @functools.cached_property
    def builder(self) -> str:
        """How sglbuild builds on this engine: "buildkit" where it has BuildKit 0.13 and buildx answers, else "classic"."""
        chosen = os.environ.get("SGLBUILD_BUILDER", "auto")
        if chosen in ("classic", "buildkit"):
            return chosen
        return "buildkit" if self.buildkit.supported() else "classic"


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
