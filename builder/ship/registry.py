"""Shipping images: push by digest (only verified images), one index per multi-platform target, and moving a registry tag.

- ``push IMAGE REPO``: the image, by its version tag, with its attestations (SBOM, provenance, verify report:
  :mod:`builder.ship.attest`) attached to its manifest; its digest is printed and recorded once all are there.
- ``push TARGET REPO`` for a target with several platforms: each platform's image, then an OCI image
  index over their manifests (by digest, with their platforms) under the version tag: a pull on either
  machine gets its own image.
- ``promote REF TAG``: the manifest or index REF names is put under TAG in the registry, once every image
  it holds passed verify here; nothing is pulled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..check.verify import verify
from ..contracts import LABEL_LOCK_DIGEST, OCI_VERSION, PLATFORMS
from ..errors import InputError, NotVerified
from ..oci import OCI_INDEX, Described, canonical, check_repo, describe, split_ref
from ..state import record_push, verified
from .attest import Attached, attach, statements

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..assemble.plan import Plan
    from ..engine import Engine
    from ..engine.records import ImageRecord
    from ..inputs.profile import Target


@dataclass(frozen=True)
class Signing:
    """What push attaches with each image: the key to sign with (None: unsigned envelopes), the plans of the images'
    targets (their stage keys go into the provenance; found by lock digest and platform), and the profile's digest."""

    key: Ed25519PrivateKey | None = None
    plans: tuple[Plan, ...] = ()
    profile_digest: str | None = None

    def plan_for(self, image: ImageRecord) -> Plan | None:
        return next((p for p in self.plans if f"sha256:{p.lock.digest}" == image.labels.get(LABEL_LOCK_DIGEST)
                     and p.platform == image.platform), None)


@dataclass(frozen=True)
class Pushed:
    image_id: str
    tag: str  # REPO:TAG
    digest: str  # the manifest's, or the index's
    platforms: dict[str, str] = field(default_factory=dict)  # an index: platform -> its image's manifest digest
    attached: dict[str, list[Attached]] = field(default_factory=dict)  # manifest digest -> its attestations

    @property
    def ref(self) -> str:
        return f"{self.tag.rpartition(':')[0]}@{self.digest}"


def _require_verified(image_ref: str, image_id: str, force: bool) -> None:
    if not force and verified(image_id) is None:
        raise NotVerified(f"{image_ref} ({image_id[:19]}) has not passed 'sglbuild verify' on this machine",
                          "verify it first, or push --force")


def _attest(engine: Engine, image: ImageRecord, repo: str, digest: str, signing: Signing) -> list[Attached]:
    """IMAGE's attestations, attached to its manifest REPO@DIGEST (its verify report made again here: the probe's
    answer is kept by the image's content, so this costs seconds)."""
    client, name = engine.registry(repo)
    manifest = client.manifest(name, digest)
    if manifest is None:
        raise NotVerified(f"{repo}@{digest} is not in the registry after its push")
    report = verify(engine, image.id, record=False)
    report.subject = f"{repo}@{digest}"
    made = statements(engine, image, repo, digest, report, signing.plan_for(image), signing.profile_digest)
    return attach(client, name, manifest, made, signing.key)


def push(engine: Engine, image_ref: str, repo: str, force: bool = False, signing: Signing = Signing()) -> Pushed:
    check_repo(repo)
    image = engine.images.get(image_ref)
    _require_verified(image_ref, image.id, force)
    tag = image.labels.get(OCI_VERSION) or image.id.split(":")[1][:12]
    engine.images.tag(image.id, f"{repo}:{tag}")
    digest = engine.images.push(repo, tag)
    attached = _attest(engine, image, repo, digest, signing)
    pushed = Pushed(image.id, f"{repo}:{tag}", digest, attached={digest: attached})
    record_push(image.id, pushed.ref, pushed.tag)  # only now: an image whose attestations did not all land is not pushed
    return pushed


def push_index(engine: Engine, target: Target, repo: str, force: bool = False, signing: Signing = Signing()) -> Pushed:
    """Every platform's image of TARGET with its attestations, then one OCI image index over them, under the version tag."""
    check_repo(repo)
    images = {p: engine.images.get(target.platform_tag(p)) for p in target.platform_names}
    for platform, image in images.items():
        _require_verified(target.platform_tag(platform), image.id, force)
    version = next(iter(images.values())).labels.get(OCI_VERSION) or target.tag
    client, name = engine.registry(repo)
    manifests, digests, attached = [], {}, {}
    for platform, image in images.items():
        arch = PLATFORMS[platform][2]
        engine.images.tag(image.id, f"{repo}:{version}-{arch}")
        digests[platform] = engine.images.push(repo, f"{version}-{arch}")
        pushed = client.manifest(name, digests[platform])
        if pushed is None:
            raise NotVerified(f"{repo}@{digests[platform]} is not in the registry after its push")
        attached[pushed.digest] = _attest(engine, image, repo, pushed.digest, signing)
        manifests.append(pushed.descriptor(platform={"architecture": arch, "os": "linux"}))
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    digest = client.put_manifest(name, version, OCI_INDEX, index)
    result = Pushed(",".join(i.id for i in images.values()), f"{repo}:{version}", digest, digests, attached)
    for image in images.values():
        record_push(image.id, result.ref, result.tag)
    return result


def described(engine: Engine, ref: str) -> Described:
    """What REF (REPO@sha256:...) names in its registry."""
    repo, digest = split_ref(ref)
    if not digest.startswith("sha256:"):
        raise InputError(f"{ref!r} is not pinned by digest (REPO@sha256:...)")
    client, name = engine.registry(repo)
    found = describe(client, name, digest)
    if found is None:
        raise InputError(f"the registry has no {ref}", "push it first ('sglbuild push')")
    return found


def promote(engine: Engine, ref: str, tag: str, require_gpu: bool = False) -> str:
    """Point REPO:TAG in the registry at what REF (by digest) names, once every image of it passed verify here."""
    found = described(engine, ref)
    top = found.top
    for platform, manifest in found.images.items():
        # An image's ID is its config's digest on the legacy image store, its manifest's on containerd's.
        record = verified(found.configs[platform]) or verified(manifest.digest)
        if record is None or (require_gpu and not record["gpu"]):
            what = "verify with --gpu require" if require_gpu else "verify"
            where = f" ({platform})" if len(found.images) > 1 else ""
            raise NotVerified(f"{ref}{where} has not passed '{what}' on this machine; the tag was not moved",
                              f"run sglbuild {what} {ref}" + (f" --platform {platform}" if where else ""))
    repo = split_ref(ref)[0]
    client, name = engine.registry(repo)
    moved = client.put_manifest(name, tag, top.media_type, top.data)
    if moved != top.digest:
        raise NotVerified(f"{repo}:{tag} now names {moved}, not {top.digest}")
    return f"{repo}:{tag}"
