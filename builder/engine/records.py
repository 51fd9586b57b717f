"""What the engine package hands back: small typed records, never docker-py's objects.

Everything outside :mod:`builder.engine` reads images, containers and networks through these;
the engine's own JSON (``attrs``) stays inside the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageRecord:
    """An image as the engine describes it."""

    id: str  # the engine's ID (the config's digest; on containerd's store, the manifest's)
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the runtime settings: Entrypoint, Cmd, Env, User, ...
    layers: tuple[str, ...] = ()  # diff IDs, base first
    size: int = 0
    architecture: str = "amd64"
    os: str = "linux"
    variant: str | None = None
    repo_digests: tuple[str, ...] = ()
    created: str = ""

    @property
    def platform(self) -> str:
        """linux/amd64, linux/arm64 (the variant, such as arm64's v8, left out)."""
        return f"{self.os}/{self.architecture}"

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "ImageRecord":
        config = attrs.get("Config") or {}
        return cls(id=attrs["Id"], tags=tuple(attrs.get("RepoTags") or ()), labels=dict(config.get("Labels") or {}),
                   config=dict(config), layers=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
                   size=int(attrs.get("Size") or 0), architecture=attrs.get("Architecture") or "amd64",
                   os=attrs.get("Os") or "linux", variant=attrs.get("Variant") or None,
                   repo_digests=tuple(attrs.get("RepoDigests") or ()), created=attrs.get("Created") or "")


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    status: str  # created | running | exited | ...

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class NetworkRecord:
    name: str
    id: str
    containers: int  # how many containers are attached


@dataclass(frozen=True)
class LayerEntry:
    """One entry of a layer tar: what ``diff`` and ``--check-reproducible`` compare."""

    kind: str  # file | dir | symlink | hardlink | other
    sha256: str
    mode: int
    owner: str
    mtime: int
    link: str
