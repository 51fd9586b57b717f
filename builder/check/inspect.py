"""``sglbuild inspect``: how an image was built, from its labels and the lock and SBOM inside it.

An image found on some machine can be rebuilt: ``--write-lock`` gives back its lock,
and ``sglbuild build`` with that lock (and the profile at the labelled revision) makes
the same image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..contracts import (
    IN_IMAGE_DIR,
    LABEL_GPU_ARCH,
    LABEL_LOCK_DIGEST,
    LABEL_SERVE_FLAGS,
    LABEL_TARGET,
    LABEL_VERSION,
    OCI_CREATED,
    OCI_REVISION,
    OCI_SOURCE,
)
from ..engine.images import tar_member_bytes
from ..inputs.lockfile import parse_lock
from .diff import layer_stages

if TYPE_CHECKING:
    from ..engine import Engine

_SHOWN = ((LABEL_TARGET, "target"), (OCI_REVISION, "revision"), (OCI_SOURCE, "source"), (OCI_CREATED, "created"),
          (LABEL_VERSION, "sglbuild"), (LABEL_LOCK_DIGEST, "lock"), (LABEL_GPU_ARCH, "gpu arch"), (LABEL_SERVE_FLAGS, "serve flags"))


@dataclass
class ImageInfo:
    ref: str
    image_id: str
    labels: dict[str, str]
    layers: list[tuple[str, str]]  # (stage, diff ID)
    files: dict[str, str] = field(default_factory=dict)  # lock.json, sbom.cdx.json

    def text(self) -> str:
        lines = [f"image     {self.ref} ({self.image_id})"]
        lines += [f"{name:<9} {self.labels[key]}" for key, name in _SHOWN if self.labels.get(key)]
        if "lock.json" in self.files:
            lock = parse_lock(self.files["lock.json"], "lock in image")
            key = ", ".join(f"{w.name} {w.version}" for w in lock.wheels if w.name in ("torch", "sgl-kernel", "sglang"))
            lines.append(f"pins      Python {lock.platform.python}, {len(lock.wheels)} wheels, {len(lock.debian)} Debian packages: {key}")
        lines.append("layers")
        lines += [f"  {stage:<9} {diff_id}" for stage, diff_id in self.layers]
        return "\n".join(lines) + "\n"


def inspect_image(engine: Engine, ref: str) -> ImageInfo:
    image = engine.images.get(ref)
    info = ImageInfo(ref, image.id, image.labels, list(zip(layer_stages(engine, image.id, len(image.layers)), image.layers)))
    archive = engine.images.archive(image.id, IN_IMAGE_DIR)
    if archive is not None:  # else not built by sglbuild: labels only
        info.files = {name: data.decode() for name, data in tar_member_bytes(archive).items()}
    return info
