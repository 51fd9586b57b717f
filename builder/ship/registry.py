"""Shipping images: push by digest (only verified images), and move a registry tag to a digest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..contracts import OCI_VERSION
from ..errors import InputError, NotVerified
from ..oci import check_repo
from ..state import record_push, verified

if TYPE_CHECKING:
    from ..engine import Engine


@dataclass(frozen=True)
class Pushed:
    image_id: str
    tag: str  # REPO:TAG
    digest: str

    @property
    def ref(self) -> str:
        return f"{self.tag.rpartition(':')[0]}@{self.digest}"


def push(engine: Engine, image_ref: str, repo: str, force: bool = False) -> Pushed:
    check_repo(repo)
    image = engine.images.get(image_ref)
    if not force and verified(image.id) is None:
        raise NotVerified(f"{image_ref} ({image.id[:19]}) has not passed 'sglbuild verify' on this machine",
                          "verify it first, or push --force")
    tag = image.labels.get(OCI_VERSION) or image.id.split(":")[1][:12]
    engine.images.tag(image.id, f"{repo}:{tag}")
    pushed = Pushed(image.id, f"{repo}:{tag}", engine.images.push(repo, tag))
    record_push(image.id, pushed.ref, pushed.tag)
    return pushed


def pull(engine: Engine, ref: str) -> str:
    """Pull REPO@sha256:... (if not already here); returns the image ID."""
    image = engine.images.find(ref)
    if image is not None:
        return image.id
    repo, _, digest = ref.partition("@")
    if not digest.startswith("sha256:"):
        raise InputError(f"{ref!r} is not pinned by digest (REPO@sha256:...)")
    return engine.images.pull(repo, digest).id


def promote(engine: Engine, ref: str, tag: str, require_gpu: bool = False) -> str:
    """Point REPO:TAG in the registry at the image REF (by digest) — only once it passed verify. Returns REPO:TAG."""
    image_id = pull(engine, ref)
    record = verified(image_id)
    if record is None or (require_gpu and not record["gpu"]):
        what = "verify with --gpu require" if require_gpu else "verify"
        raise NotVerified(f"{ref} has not passed '{what}' on this machine; the tag was not moved", f"run sglbuild {what} {ref}")
    repo = ref.partition("@")[0]
    engine.images.tag(image_id, f"{repo}:{tag}")
    digest = engine.images.push(repo, tag)
    if f"{repo}@{digest}" != ref:
        raise NotVerified(f"{repo}:{tag} now names {digest}, not {ref}")
    return f"{repo}:{tag}"
