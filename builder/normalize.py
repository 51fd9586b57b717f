"""Step 6, normalize: the final image, re-issued with a config that depends only on its inputs.

The classic builder writes creation times, the build container's ID and host name into
the image config, so two identical builds get different image IDs even when every layer
is identical. This writes a new config — the same layers (by diff ID), the same runtime
settings, the plan's labels, creation times set to SOURCE_DATE_EPOCH, one history entry
per layer naming its stage — and loads it. The engine already has every layer, so the
load reads none of them: it is instant, and the image ID is the sha256 of that config.

Labels are applied here and nowhere else: the target's name, the revision and the human
tag change the config, never a layer, so they rebuild nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .contracts import HISTORY_PREFIX, LABEL_MANAGED, LABEL_STAGE_KEY, PROVENANCE_LABELS
from .errors import EngineError

if TYPE_CHECKING:
    from .engine import Engine

_RUNTIME_KEYS = ("User", "Env", "Entrypoint", "Cmd", "WorkingDir", "ExposedPorts", "Volumes", "StopSignal")


@dataclass(frozen=True)
class Normalized:
    image_id: str  # sha256 of the config
    content_id: str  # the same, with the provenance labels left out: equal for images that differ only in where they came from


def normalized_config(image_attrs: dict[str, Any], layer_stages: list[str], labels: dict[str, str], epoch: int) -> dict[str, Any]:
    created = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    runtime = image_attrs.get("Config") or {}
    config = {k: runtime[k] for k in _RUNTIME_KEYS if runtime.get(k)}
    kept = {k: v for k, v in (runtime.get("Labels") or {}).items() if k != LABEL_STAGE_KEY}
    config["Labels"] = dict(sorted({**kept, LABEL_MANAGED: "true", **labels}.items()))
    diff_ids = image_attrs["RootFS"]["Layers"]
    if len(layer_stages) != len(diff_ids):
        raise EngineError(f"normalize: {len(diff_ids)} layers but {len(layer_stages)} stage names")
    return {
        "architecture": image_attrs.get("Architecture", "amd64"),
        "os": image_attrs.get("Os", "linux"),
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": created, "created_by": f"{HISTORY_PREFIX}{stage}"} for stage in layer_stages],
    }


def _canonical(config: dict[str, Any]) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def content_id(config: dict[str, Any]) -> str:
    labels = {k: v for k, v in config["config"].get("Labels", {}).items() if k not in PROVENANCE_LABELS}
    return "sha256:" + hashlib.sha256(_canonical({**config, "config": {**config["config"], "Labels": labels}})).hexdigest()


def normalize(engine: Engine, image_id: str, layer_stages: list[str], labels: dict[str, str], epoch: int) -> Normalized:
    """Load the normalized twin of IMAGE_ID (same layers, labels LABELS); returns its IDs."""
    attrs = engine.images.get(image_id).attrs
    config = normalized_config(attrs, layer_stages, labels, epoch)
    raw = _canonical(config)
    digest = hashlib.sha256(raw).hexdigest()
    result = Normalized(f"sha256:{digest}", content_id(config))
    if engine.images.find(result.image_id) is not None:
        return result
    manifest = [{"Config": f"{digest}.json", "RepoTags": None,
                 "Layers": [f"{d.split(':', 1)[1]}/layer.tar" for d in attrs["RootFS"]["Layers"]]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((f"{digest}.json", raw), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), epoch, 0o644
            tar.addfile(info, io.BytesIO(data))
    engine.images.load(buf.getvalue(), "the normalized config")
    return result
