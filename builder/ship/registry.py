"""Shipping images: push by digest (only verified images), one index per multi-platform target, and moving a registry tag.

- ``push IMAGE REPO``: the image, by its version tag, with its attestations (SBOM, provenance, verify report:
  :mod:`builder.ship.attest`) attached to its manifest; its digest is printed and recorded once all are there.
- ``push TARGET REPO`` for a target with several platforms: each platform's image, then an OCI image
  index over their manifests (by digest, with their platforms) under the version tag: a pull on either
  machine gets its own image.
- ``push TARGET REPO --platform P``: one platform's image (a CI job on a runner of that architecture), by digest,
  under ``VERSION-ARCH``, with its attestations; the digest is the job's output.
- ``join TARGET REF...``: the target's index written from the platforms' digests already in the registry, each checked
  first (its platform one the target declares, its attestations signed by the key, its attested verdicts passed),
  pushed by digest under the version tag; only manifests, configs and attestations are read, no layer.
- ``promote REF TAG``: the manifest or index REF names is put under TAG in the registry, once every image
  it holds passed verify, here or in the verdicts given (each platform's verify report, from the jobs that ran it);
  nothing is pulled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..check.attested import verify_attested
from ..check.verify import verify
from ..contracts import LABEL_LOCK_DIGEST, OCI_VERSION, PLATFORMS
from ..errors import InputError, NotVerified
from ..oci import OCI_INDEX, Blob, Described, canonical, check_repo, describe, split_ref
from ..state import record_push, verified
from .attest import Attached, attach, statements

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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
    bytes_read: int = 0  # from the registry (join: manifests, configs and attestations only)

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


def _push_as(engine: Engine, image_id: str, repo: str, tag: str) -> str:
    """IMAGE_ID pushed as REPO:TAG; its digest. The local tag the push needs goes again if the push fails."""
    engine.images.tag(image_id, f"{repo}:{tag}")
    try:
        return engine.images.push(repo, tag)
    except BaseException:
        if len(engine.images.get(image_id).tags) > 1:  # only the tag: the image keeps its own
            engine.images.remove(f"{repo}:{tag}")
        raise


def push(engine: Engine, image_ref: str, repo: str, force: bool = False, signing: Signing = Signing(), tag: str | None = None) -> Pushed:
    """IMAGE_REF pushed to REPO under TAG (default: its version label), with its attestations."""
    check_repo(repo)
    image = engine.images.get(image_ref)
    _require_verified(image_ref, image.id, force)
    tag = tag or image.labels.get(OCI_VERSION) or image.id.split(":")[1][:12]
    digest = _push_as(engine, image.id, repo, tag)
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
        digests[platform] = _push_as(engine, image.id, repo, f"{version}-{arch}")
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


def platform_tag(version: str, platform: str) -> str:
    """The registry tag of one platform's image of an index (its version, then its architecture)."""
    return f"{version}-{PLATFORMS[platform][2]}"


def push_platform(engine: Engine, target: Target, platform: str, repo: str, force: bool = False, signing: Signing = Signing()) -> Pushed:
    """PLATFORM's image of TARGET alone (a runner of that architecture built it), by digest, with its attestations."""
    if platform not in target.platform_names:
        raise InputError(f"{target.name} declares no {platform}", f"its platforms: {', '.join(target.platform_names)}")
    image = engine.images.get(target.platform_tag(platform))
    version = image.labels.get(OCI_VERSION) or target.tag
    pushed = push(engine, target.platform_tag(platform), repo, force, signing, platform_tag(version, platform))
    return Pushed(pushed.image_id, pushed.tag, pushed.digest, {platform: pushed.digest}, pushed.attached)


def join(engine: Engine, target: Target, refs: list[str], key: Ed25519PublicKey) -> Pushed:
    """TARGET's index over the images REFS name (REPO@sha256:..., one per declared platform, already in the registry),
    each checked first from the registry alone: its platform, its attestations signed by KEY, its attested verdicts."""
    repos = {split_ref(ref)[0] for ref in refs}
    if len(repos) != 1:
        raise InputError(f"join takes digests of one repository, not {', '.join(sorted(repos)) or 'none'}",
                         "give each platform's REPO@sha256:... as push --platform printed it")
    repo = repos.pop()
    check_repo(repo)
    client, name = engine.registry(repo)
    before = client.received
    joined: dict[str, tuple[Blob, str]] = {}  # platform -> its manifest, its version label
    for ref in refs:
        digest = split_ref(ref)[1]
        if not digest.startswith("sha256:"):
            raise InputError(f"{ref!r} is not pinned by digest", "give REPO@sha256:... as push --platform printed it")
        found = describe(client, name, digest)
        if found is None:
            raise InputError(f"the registry has no {ref}", "push it first: sglbuild push TARGET REPO --platform P")
        if found.is_index:
            raise InputError(f"{ref} is an index already", "give each platform's image manifest, as push --platform printed it")
        platform = next(iter(found.images))
        if platform not in target.platform_names:
            raise InputError(f"{ref} is a {platform} image; {target.name} declares {', '.join(target.platform_names)}",
                             "give the digests of this target's images")
        if platform in joined:
            raise InputError(f"two images for {platform}: {joined[platform][0].digest[:19]} and {digest[:19]}",
                             "give one digest per platform")
        report = verify_attested(engine, ref, key, platform, required=True)
        if not report.passed:
            first = next(c for c in report.checks if c.status == "fail")
            raise NotVerified(f"{ref} ({platform}): {first.name}: {first.detail}; no index was pushed",
                              "push that platform again with a passing verify and --sign-key, or give the key it was signed with")
        config = json.loads(client.blob(name, found.configs[platform]))
        joined[platform] = (found.top, ((config.get("config") or {}).get("Labels") or {}).get(OCI_VERSION) or target.tag)
    missing = [p for p in target.platform_names if p not in joined]
    if missing:
        raise InputError(f"no image for {', '.join(missing)} of {target.name}; no index was pushed",
                         "give every platform's digest (push --platform P prints it)")
    versions = {version for _, version in joined.values()}
    if len(versions) != 1:
        raise InputError(f"the platforms' images are of different versions ({', '.join(sorted(versions))}); no index was pushed",
                         "build every platform from the same commit and lock")
    manifests = [joined[p][0].descriptor(platform={"architecture": PLATFORMS[p][2], "os": "linux"}) for p in target.platform_names]
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    version = versions.pop()
    digest = client.put_manifest(name, version, OCI_INDEX, index)
    return Pushed("", f"{repo}:{version}", digest, {p: joined[p][0].digest for p in target.platform_names},
                  bytes_read=client.received - before)


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


GPU_CHECKS = ("gpu-device", "gpu-compute")


def read_verdict(path: Path) -> dict:
    """One verify report (``verify --format json``), as a verify job wrote it."""
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a verify report: {exc}", "pass the file verify --format json --output wrote") from None
    if not isinstance(report, dict) or report.get("kind") != "verify" or "image_id" not in report:
        raise InputError(f"{path} is not a verify report", "pass the file verify --format json --output wrote")
    return report


def _verdict_passes(report: dict, image_ids: tuple[str, str], require_gpu: bool) -> bool:
    """REPORT (verify's JSON) is of one of IMAGE_IDS and passed (on a GPU, when REQUIRE_GPU)."""
    if report.get("image_id") not in image_ids or not report.get("passed"):
        return False
    statuses = {c["id"]: c["status"] for c in report.get("checks") or []}
    return not require_gpu or all(statuses.get(c) == "pass" for c in GPU_CHECKS)


def promote(engine: Engine, ref: str, tag: str, require_gpu: bool = False, verdicts: list[dict] | None = None) -> str:
    """Point REPO:TAG in the registry at what REF (by digest) names, once every image of it passed verify: here (this
    machine's records), or in VERDICTS (verify's JSON reports, from the jobs that verified each platform elsewhere)."""
    found = described(engine, ref)
    top = found.top
    failing = []
    for platform, manifest in found.images.items():
        # An image's ID is its config's digest on the legacy image store, its manifest's on containerd's.
        ids = (found.configs[platform], manifest.digest)
        if verdicts is not None:
            mine = [v for v in verdicts if v.get("image_id") in ids]
            ok = bool(mine) and all(_verdict_passes(v, ids, require_gpu) for v in mine)
        else:
            record = verified(ids[0]) or verified(ids[1])
            ok = record is not None and (not require_gpu or record["gpu"])
        if not ok:
            failing.append(platform)
    if failing:
        what = "verify with --gpu require" if require_gpu else "verify"
        where = f" ({', '.join(failing)} of {', '.join(found.images)})" if len(found.images) > 1 else ""
        source = "in the verdicts given" if verdicts is not None else "on this machine"
        raise NotVerified(f"{ref}{where} has not passed '{what}' {source}; the tag was not moved",
                          f"run sglbuild {what} {ref}" + (f" --platform {failing[0]}" if where else ""))
    repo = split_ref(ref)[0]
    client, name = engine.registry(repo)
    moved = client.put_manifest(name, tag, top.media_type, top.data)
    if moved != top.digest:
        raise NotVerified(f"{repo}:{tag} now names {moved}, not {top.digest}")
    return f"{repo}:{tag}"
