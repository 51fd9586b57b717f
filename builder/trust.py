"""Which images passed verify on this machine: the record that ``push`` and ``promote`` trust.

Kept per image ID in the state directory (``$SGLBUILD_STATE``, default
``~/.local/state/sglbuild``). An image pulled by digest has the same ID as the one pushed,
so a record made before the push still names it. Each record also keeps the image's
content ID (its config without provenance labels) and the gate's key, so a rebuild that
changed only the revision label is not smoke-tested and verified again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    return Path(os.environ.get("SGLBUILD_STATE", Path.home() / ".local" / "state" / "sglbuild"))


def _load(name: str) -> dict[str, Any]:
    try:
        return json.loads((state_dir() / name).read_text())
    except (OSError, ValueError):
        return {}


def _save(name: str, data: dict[str, Any]) -> None:
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, d / name)  # atomic: a killed process leaves the old record or the new one


def record_verified(image_id: str, *, gpu_checked: bool, content_id: str | None = None, gate_key: str | None = None) -> None:
    records = _load("verified.json")
    old = records.get(image_id, {})
    records[image_id] = {"time": int(time.time()), "gpu": gpu_checked or old.get("gpu", False),
                         "content": content_id or old.get("content"), "gate": gate_key or old.get("gate")}
    _save("verified.json", records)


def verified(image_id: str) -> dict[str, Any] | None:
    return _load("verified.json").get(image_id)


def passed_gate(content_id: str, gate_key: str) -> str | None:
    """The ID of an image with this content that passed this gate here, if there is one."""
    for image_id, record in _load("verified.json").items():
        if record.get("content") == content_id and record.get("gate") == gate_key:
            return image_id
    return None


def record_stage(key: str, image_id: str) -> None:
    """The image built (or pulled and checked) for stage key KEY: a later build reuses only that image."""
    records = _load("stages.json")
    records[key] = image_id
    _save("stages.json", records)


def stage_image(key: str) -> str | None:
    return _load("stages.json").get(key)


def record_push(image_id: str, ref: str, tag: str) -> None:
    pushes = _load("pushes.json")
    pushes.setdefault(image_id, []).append({"ref": ref, "tag": tag, "time": int(time.time())})
    _save("pushes.json", pushes)
