"""``sglbuild inspect``: how an image was built, from its labels and the lock and SBOM inside it.

An image found on some machine can be rebuilt: ``--write-lock`` gives back its lock,
and ``sglbuild build`` with that lock (and the profile at the labelled revision) makes
the same image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..contracts import (
    DEFAULT_PLATFORM,
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
from ..inputs.lockfile import parse_lock_file
from .attested import read_attestations
from .diff import layer_stages

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
    platform: str = DEFAULT_PLATFORM

    def text(self) -> str:
        lines = [f"image     {self.ref} ({self.image_id}, {self.platform})"]
        lines += [f"{name:<9} {self.labels[key]}" for key, name in _SHOWN if self.labels.get(key)]
        if "lock.json" in self.files:
            locks = parse_lock_file(self.files["lock.json"], "lock in image")
            lock = locks.lock(self.platform if locks.multi else None)
            key = ", ".join(f"{w.name} {w.version}" for w in lock.wheels if w.name in ("torch", "sgl-kernel", "sglang"))
            lines.append(f"pins      Python {lock.platform.python}, {len(lock.wheels)} wheels, {len(lock.debian)} Debian packages: {key}")
        lines.append("layers")
        lines += [f"  {stage:<9} {diff_id}" for stage, diff_id in self.layers]
        return "\n".join(lines) + "\n"


def inspect_image(engine: Engine, ref: str) -> ImageInfo:
    image = engine.images.get(ref)
    info = ImageInfo(ref, image.id, image.labels, list(zip(layer_stages(engine, image.id, len(image.layers)), image.layers)),
                     platform=image.platform)
    archive = engine.images.archive(image.id, IN_IMAGE_DIR)
    if archive is not None:  # else not built by sglbuild: labels only
        info.files = {name: data.decode() for name, data in tar_member_bytes(archive).items()}
    return info


@dataclass
class RemoteInfo:
    """A reference as its registry holds it, read without pulling a layer: an image, or an index of them."""

    ref: str
    digest: str
    media_type: str
    images: dict[str, tuple[str, str, int]]  # platform -> (manifest digest, config digest, total layer bytes)
    notes: list[str] = field(default_factory=list)  # what else the registry holds about it (attestations)

    def text(self) -> str:
        kind = "index" if len(self.images) > 1 or "index" in self.media_type or "list" in self.media_type else "image"
        lines = [f"{kind:<9} {self.ref} ({self.digest})", f"type      {self.media_type}"]
        for platform, (manifest, config, size) in sorted(self.images.items()):
            lines.append(f"  {platform:<12} {manifest}  config {config[:19]}  {size / 1e9:.2f} GB of layers")
        lines += self.notes
        return "\n".join(lines) + "\n"


def inspect_remote(engine: Engine, ref: str, key: Ed25519PublicKey | None = None) -> RemoteInfo:
    """REF (REPO@sha256:... or REPO:TAG) in its registry: its manifest or index and each image's, with each image's
    attestations (their signatures checked with KEY when given), no layer read."""
    from ..errors import InputError
    from ..oci import describe, split_ref

    repo, reference = split_ref(ref)
    client, name = engine.registry(repo)
    found = describe(client, name, reference)
    if found is None:
        raise InputError(f"the registry has no {ref}", "check the reference (REPO@sha256:... or REPO:TAG)")
    images = {}
    for platform, manifest in found.images.items():
        layers = json.loads(manifest.data).get("layers") or []
        images[platform] = (manifest.digest, found.configs[platform], sum(int(layer.get("size", 0)) for layer in layers))
    info = RemoteInfo(ref, found.top.digest, found.top.media_type, images)
    for platform, (manifest, _, _) in sorted(images.items()):
        _, attested = read_attestations(engine, f"{repo}@{manifest}", key)
        where = f" ({platform})" if len(images) > 1 else ""
        info.notes += [f"attested{where}  {a.summary()}" for a in attested] or [f"attested{where}  nothing (no attestation in the registry)"]
    return info
