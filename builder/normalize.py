"""Build step 6, normalize: the final image, re-issued with a config that depends only on its inputs.

The classic builder writes creation times, the build container's ID and host name into
the image config, so two identical builds get different image IDs even when every layer
is identical. This writes a new config — the same layers (by diff ID), the same runtime
settings and labels, creation times set to SOURCE_DATE_EPOCH, one history entry per
layer naming its stage — and loads it. The engine already has every layer, so the load
reads none of them: it is instant, and the image ID is the sha256 of that config.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import datetime, timezone

import docker
import docker.errors

from .engine import find_image
from .errors import EngineError

_RUNTIME_KEYS = ("User", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels", "ExposedPorts", "Volumes", "StopSignal")


def normalized_config(image_attrs: dict, layer_stages: list[str], epoch: int) -> bytes:
    created = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {k: image_attrs["Config"][k] for k in _RUNTIME_KEYS if (image_attrs.get("Config") or {}).get(k)}
    diff_ids = image_attrs["RootFS"]["Layers"]
    if len(layer_stages) != len(diff_ids):
        raise EngineError(f"normalize: {len(diff_ids)} layers but {len(layer_stages)} stage names")
    return json.dumps({
        "architecture": image_attrs.get("Architecture", "amd64"),
        "os": image_attrs.get("Os", "linux"),
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"sglbuild: {stage}"} for stage in layer_stages],
    }, sort_keys=True, separators=(",", ":")).encode()


def normalize(client: docker.DockerClient, image_id: str, layer_stages: list[str], epoch: int) -> str:
    """Load the normalized twin of IMAGE_ID; returns its ID (sha256 of the config)."""
    attrs = client.images.get(image_id).attrs
    raw = normalized_config(attrs, layer_stages, epoch)
    digest = hashlib.sha256(raw).hexdigest()
    if find_image(client, f"sha256:{digest}") is not None:
        return f"sha256:{digest}"
    manifest = [{"Config": f"{digest}.json", "RepoTags": None,
                 "Layers": [f"{d.split(':', 1)[1]}/layer.tar" for d in attrs["RootFS"]["Layers"]]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((f"{digest}.json", raw), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), epoch, 0o644
            tar.addfile(info, io.BytesIO(data))
    try:
        for chunk in client.api.load_image(buf.getvalue()):
            if isinstance(chunk, dict) and "error" in chunk:
                raise EngineError(f"normalize: the engine refused the normalized config: {chunk['error']}")
    except docker.errors.APIError as exc:
        raise EngineError(f"normalize: the engine refused the normalized config: {exc.explanation}") from None
    return f"sha256:{digest}"
