"""What the engine package hands back: small typed records, never docker-py's objects.

Everything outside :mod:`builder.engine` reads images, containers and networks through these;
the engine's own JSON (``attrs``) stays inside the package.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageConfig:
    """An image's run-time settings, typed: what a process in a container of it starts with. Parsed once from the
    engine's answer; :meth:`spec` gives them back in the OCI config's form (what a re-issued config carries)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # VAR=value, in the image's order
    user: str = ""
    working_dir: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""

    @property
    def environment(self) -> dict[str, str]:
        """The environment as a mapping (a later VAR wins, as in a container)."""
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in self.env)

    def spec(self) -> dict[str, Any]:
        """The settings that are set, under the OCI image config's names, in its order."""
        values = {"User": self.user, "Env": list(self.env), "Entrypoint": list(self.entrypoint), "Cmd": list(self.cmd),
                  "WorkingDir": self.working_dir, "ExposedPorts": {p: {} for p in self.exposed_ports},
                  "Volumes": {v: {} for v in self.volumes}, "StopSignal": self.stop_signal}
        return {k: v for k, v in values.items() if v}

    @classmethod
    def from_spec(cls, config: dict[str, Any]) -> "ImageConfig":
        return cls(entrypoint=tuple(config.get("Entrypoint") or ()), cmd=tuple(config.get("Cmd") or ()),
                   env=tuple(config.get("Env") or ()), user=config.get("User") or "", working_dir=config.get("WorkingDir") or "",
                   exposed_ports=tuple(config.get("ExposedPorts") or ()), volumes=tuple(config.get("Volumes") or ()),
                   stop_signal=config.get("StopSignal") or "")


@dataclass(frozen=True)
class ImageRecord:
    """An image as the engine describes it."""

    id: str  # the engine's ID (the config's digest; on containerd's store, the manifest's)
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    config: ImageConfig = field(default_factory=ImageConfig)
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

    @property
    def content_key(self) -> str:
        """What a process in the image sees, as one digest: its layers (each named by the hash of its files) and the
        settings of its config that reach the process. Labels, tags and the ID leave it alone: another build of the same
        stage (another wheel server's address in its history) or a relabelled image has the same content."""
        seen = [list(self.layers), list(self.config.env), self.config.user, self.config.working_dir, self.platform]
        return hashlib.sha256(json.dumps(seen).encode()).hexdigest()

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "ImageRecord":
        config = attrs.get("Config") or {}
        return cls(id=attrs["Id"], tags=tuple(attrs.get("RepoTags") or ()), labels=dict(config.get("Labels") or {}),
                   config=ImageConfig.from_spec(config), layers=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
                   size=int(attrs.get("Size") or 0), architecture=attrs.get("Architecture") or "amd64",
                   os=attrs.get("Os") or "linux", variant=attrs.get("Variant") or None,
                   repo_digests=tuple(attrs.get("RepoDigests") or ()), created=attrs.get("Created") or "")


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    status: str  # created | running | exited | ...


@dataclass(frozen=True)
class VolumeRecord:
    name: str
    labels: dict[str, str]
    size: int | None = None  # bytes used, where the engine says (None: not measured)


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
