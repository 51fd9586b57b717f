"""``sglbuild inspect``: how an image was built, from its labels and the lock and SBOM inside it.

An image found on some machine can be rebuilt: ``--write-lock`` gives back its lock,
and ``sglbuild build`` with that lock (and the profile at the labelled revision) makes
the same image.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field

import docker

from .engine import LABEL_MANAGED, find_image
from .errors import InputError
from .lock import parse_lock

IN_IMAGE = "/usr/share/sglbuild"


@dataclass
class ImageInfo:
    ref: str
    image_id: str
    labels: dict[str, str]
    layers: list[tuple[str, str]]  # (stage, diff ID)
    files: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lb = self.labels
        lines = [f"image     {self.ref} ({self.image_id})"]
        for key, name in (("io.sglbuild.target", "target"), ("org.opencontainers.image.revision", "revision"),
                          ("org.opencontainers.image.source", "source"), ("org.opencontainers.image.created", "created"),
                          ("io.sglbuild.version", "sglbuild"), ("io.sglbuild.lock-digest", "lock"),
                          ("io.sglbuild.gpu-arch", "gpu arch"), ("io.sglbuild.serve-flags", "serve flags")):
            if lb.get(key):
                lines.append(f"{name:<9} {lb[key]}")
        if "lock.json" in self.files:
            lock = parse_lock(self.files["lock.json"], "lock in image")
            key = ", ".join(f"{w.name} {w.version}" for w in lock.wheels if w.name in ("torch", "sgl-kernel", "sglang"))
            lines.append(f"pins      Python {lock.platform.python}, {len(lock.wheels)} wheels, {len(lock.debian)} Debian packages: {key}")
        lines.append("layers")
        for stage, diff_id in self.layers:
            lines.append(f"  {stage:<9} {diff_id}")
        return "\n".join(lines) + "\n"


def inspect_image(client: docker.DockerClient, ref: str) -> ImageInfo:
    from .layers import layer_stages

    image = find_image(client, ref)
    if image is None:
        raise InputError(f"no image {ref!r} on this engine", "build it, or pull it by digest")
    diff_ids = image.attrs["RootFS"]["Layers"]
    info = ImageInfo(ref, image.id, image.labels or {}, list(zip(layer_stages(client, image.id, len(diff_ids)), diff_ids)))
    container = client.containers.create(image.id, ["true"], entrypoint=[], labels={LABEL_MANAGED: "true"}, network_disabled=True)
    try:
        bits, _ = container.get_archive(IN_IMAGE)
        with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    info.files[member.name.rsplit("/", 1)[-1]] = tar.extractfile(member).read().decode()
    except docker.errors.NotFound:
        pass  # not built by sglbuild: labels only
    finally:
        container.remove(force=True)
    return info
