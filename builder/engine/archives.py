"""Writing what ``docker load`` reads: an image config over layers the engine already holds.

sglbuild never writes a layer; it re-issues configs (a normalized final image, an imported base
with its import time taken out). Which archive the engine accepts depends on its image store:

- the legacy store takes ``manifest.json`` naming the config and ``DIFF_ID/layer.tar`` files it
  need not be given (it has every layer already);
- containerd's store takes an OCI layout whose manifest names layer blobs its content store
  holds, so the image's own manifest is read from its export and given the new config.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

from ..oci import OCI_INDEX, OCI_MANIFEST, canonical, digest_of

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
__all__ = ["canonical", "digest_of", "legacy_archive", "oci_layout_archive", "tar_archive", "full_name"]


def tar_archive(files: dict[str, bytes], mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def legacy_archive(config: bytes, name: str | None, mtime: int) -> bytes:
    """A config for the legacy store, tagged NAME (None: untagged); its layers are the engine's already."""
    digest = digest_of(config).split(":", 1)[1]
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    manifest = [{"Config": f"{digest}.json", "RepoTags": [name] if name else None,
                 "Layers": [f"{d.split(':', 1)[1]}/layer.tar" for d in diff_ids]}]
    return tar_archive({f"{digest}.json": config, "manifest.json": json.dumps(manifest).encode()}, mtime)


def full_name(ref: str) -> str:
    """A reference as containerd names images (docker.io/library/NAME for a bare name)."""
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return f"docker.io/library/{ref}"
    return ref if ("." in first or ":" in first or first == "localhost") else f"docker.io/{ref}"


def oci_layout_archive(config: bytes, manifest: dict[str, Any], name: str, mtime: int) -> bytes:
    """An OCI layout of MANIFEST with CONFIG as its config, named NAME; its layer blobs are the engine's already."""
    manifest = {**manifest, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)}}
    raw = canonical(manifest)
    tag = name.rpartition(":")[2]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest_of(raw), "size": len(raw),
         "annotations": {"io.containerd.image.name": full_name(name), "org.opencontainers.image.ref.name": tag}}]}
    return tar_archive({"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": canonical(index),
                        f"blobs/sha256/{digest_of(raw).split(':', 1)[1]}": raw,
                        f"blobs/sha256/{digest_of(config).split(':', 1)[1]}": config}, mtime)
