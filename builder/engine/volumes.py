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
        sizes = self._sizes()
        return [VolumeRecord(v.name, dict(v.attrs.get("Labels") or {}), sizes.get(v.name)) for v in found]

    def _sizes(self) -> dict[str, int | None]:
        """Bytes per volume from the engine's disk usage; {} (sizes unknown) when the engine cannot say now.

        A size is a detail: the disk-usage walk can fail while another client removes an image under it
        (containerd's store), and that must not fail a doctor or a gc. ``type=volume`` (API 1.42+) keeps the
        walk to volumes; docker-py's ``df()`` has no parameter for it, and older engines ignore it.
        """
        api = self.engine.client.api
        try:
            usage = api._result(api._get(api._url("/system/df"), params={"type": "volume"}), True)
        except (docker.errors.DockerException, OSError, ValueError):
            return {}
        return {v["Name"]: (v.get("UsageData") or {}).get("Size") for v in usage.get("Volumes") or []}

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
