"""Where the engine's errors become the project's: every request sglbuild makes runs inside :func:`guard`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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
