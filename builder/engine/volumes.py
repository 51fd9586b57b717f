"""``docker volume ...``: the named volumes sglbuild makes (a served model's compile caches), labelled as its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import docker.errors

from ..contracts import LABEL_MANAGED
from .guard import guard
from .records import VolumeRecord

if TYPE_CHECKING:
    from . import Engine


class Volumes:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def find(self, name: str) -> VolumeRecord | None:
        with guard(f"a look at the {name} volume"):
            try:
                v = self.engine.client.volumes.get(name)
            except docker.errors.NotFound:
                return None
            return VolumeRecord(v.name, dict(v.attrs.get("Labels") or {}))

    def ensure(self, name: str, labels: dict[str, str]) -> tuple[VolumeRecord, bool]:
        """The volume NAME, made now with LABELS (and sglbuild's) unless it is there; True when it was made now."""
        found = self.find(name)
        if found is not None:
            return found, False
        with guard(f"making the {name} volume"):
            v = self.engine.client.volumes.create(name, labels={LABEL_MANAGED: "true", **labels})
        return VolumeRecord(v.name, dict(v.attrs.get("Labels") or {})), True

    def list_managed(self) -> list[VolumeRecord]:
        """sglbuild's volumes, with the bytes each uses (from the engine's disk usage)."""
        with guard("a list of volumes"):
            found = self.engine.client.volumes.list(filters={"label": LABEL_MANAGED})
            sizes = {v["Name"]: (v.get("UsageData") or {}).get("Size") for v in self.engine.client.df().get("Volumes") or []}
        return [VolumeRecord(v.name, dict(v.attrs.get("Labels") or {}), sizes.get(v.name)) for v in found]

    def remove(self, name: str) -> bool:
        """Remove the volume NAME; False when a container still uses it."""
        with guard(f"removing the {name} volume"):
            try:
                self.engine.client.volumes.get(name).remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # in use
                    return False
                raise
        return True
