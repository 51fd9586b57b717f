"""Evidence that travels with a pushed image: three in-toto Statements about its manifest, attached by digest.

- the CycloneDX SBOM the image carries (``/usr/share/sglbuild/sbom.cdx.json``);
- SLSA provenance v1: the builder (sglbuild's version), the target, the lock's and profile's digests, the source
  revision, each stage's key, the base's Debian epoch, the engine and the builder kind;
- the verify report for each architecture the image declares, as ``sglbuild verify`` made it here.

Each is a DSSE envelope (signed with the user's key when one is given: :mod:`builder.sign`), attached as an OCI
referrer of the manifest (``subject``, ``artifactType`` application/vnd.in-toto+json), which registries with the
Referrers API list and, on those without it (Debian's docker-registry), the tag schema's ``sha256-<digest>``
index lists. The image's manifest is not touched, so its digest stays the reproducible build's; a multi-platform
index's images each get their own. ``sglbuild verify REPO@sha256:... --key PUB`` reads them back
(:mod:`builder.check.attested`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..contracts import (
    ATTESTATION_ARTIFACT,
    BUILD_TYPE,
    DSSE_MEDIA_TYPE,
    IN_TOTO_STATEMENT,
    LABEL_LOCK_DIGEST,
    LABEL_TARGET,
    OCI_REVISION,
    OCI_SOURCE,
    PREDICATE_ANNOTATION,
    PREDICATE_PROVENANCE,
    PREDICATE_SBOM,
    PREDICATE_VERIFY,
    SBOM_IN_IMAGE,
    SIGNER_ANNOTATION,
)
from ..engine.images import tar_member_bytes
from ..oci import Blob, Registry
from ..sign import envelope, key_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..assemble.plan import Plan
    from ..check.report import Report
    from ..engine import Engine
    from ..engine.records import ImageRecord


@dataclass(frozen=True)
class Attached:
    predicate_type: str
    digest: str  # the referrer manifest's
    signed_by: str | None


def statement(repo: str, manifest_digest: str, predicate_type: str, predicate: dict[str, Any]) -> bytes:
    """An in-toto Statement v1 about the manifest REPO@MANIFEST_DIGEST."""
    algorithm, _, hexdigest = manifest_digest.partition(":")
    return json.dumps({"_type": IN_TOTO_STATEMENT, "subject": [{"name": repo, "digest": {algorithm: hexdigest}}],
                       "predicateType": predicate_type, "predicate": predicate}, sort_keys=True, separators=(",", ":")).encode()


def provenance(engine: Engine, image: ImageRecord, plan: Plan | None, profile_digest: str | None) -> dict[str, Any]:
    """SLSA provenance v1 for IMAGE; PLAN (the profile's plan whose lock the image carries) gives the stage keys."""
    labels = image.labels
    revision, source = labels.get(OCI_REVISION, ""), labels.get(OCI_SOURCE, "")
    lock = labels.get(LABEL_LOCK_DIGEST, "")
    dependencies = []
    if lock:
        dependencies.append({"uri": f"locks/{labels.get(LABEL_TARGET, '')}.lock.json", "digest": {"sha256": lock.split(":", 1)[-1]}})
    if source and revision and revision != "unknown":
        dependencies.append({"uri": f"git+{source}@{revision}", "digest": {"gitCommit": revision}})
    internal: dict[str, Any] = {"engine": engine.version, "builder": plan.builder if plan else engine.builder,
                                "layers": list(image.layers)}
    if plan is not None:
        dependencies.append({"uri": plan.base, "annotations": {"debian": plan.target.base.suite}})
        # a cross-compiled platform's modules come from a stage of the build platform: its key too
        cross = {plan.cross.stages[-1].name: plan.cross.stages[-1].key} if plan.cross else {}
        internal.update(stages={**{s.name: s.key for s in plan.stages}, **cross}, sourceDateEpoch=plan.target.base.source_date_epoch,
                        base=plan.base, platform=plan.platform)
    external: dict[str, Any] = {"target": labels.get(LABEL_TARGET, ""), "platform": image.platform}
    if profile_digest:
        external["profile"] = {"path": "sglbuild.toml", "digest": {"sha256": profile_digest}}
    return {
        "buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": external, "internalParameters": internal,
                            "resolvedDependencies": dependencies},
        "runDetails": {"builder": {"id": f"https://github.com/sglbuild/sglbuild@{__version__}", "version": {"sglbuild": __version__}},
                       "metadata": {"invocationId": image.id, "finishedOn": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}},
    }


def statements(engine: Engine, image: ImageRecord, repo: str, manifest_digest: str, report: Report,
               plan: Plan | None, profile_digest: str | None) -> list[tuple[str, bytes]]:
    """(predicate type, statement) for each attestation of IMAGE pushed as REPO@MANIFEST_DIGEST."""
    out = []
    sbom = engine.images.archive(image.id, SBOM_IN_IMAGE)
    if sbom is not None:  # an image sglbuild built carries its SBOM; one made by hand may not
        out.append((PREDICATE_SBOM, json.loads(next(iter(tar_member_bytes(sbom).values())))))
    out.append((PREDICATE_PROVENANCE, provenance(engine, image, plan, profile_digest)))
    out.append((PREDICATE_VERIFY, report.to_dict()))
    return [(kind, statement(repo, manifest_digest, kind, predicate)) for kind, predicate in out]


def attach(client: Registry, name: str, subject: Blob, made: list[tuple[str, bytes]], key: Ed25519PrivateKey | None) -> list[Attached]:
    """Each statement of MADE in a DSSE envelope (signed with KEY), attached to SUBJECT as an OCI referrer."""
    signer = key_id(key.public_key()) if key is not None else None
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    attached = []
    for kind, body in made:
        notes = {PREDICATE_ANNOTATION: kind, "org.opencontainers.image.created": created,
                 **({SIGNER_ANNOTATION: signer} if signer else {})}
        digest = client.attach(name, subject, ATTESTATION_ARTIFACT, [(DSSE_MEDIA_TYPE, envelope(body, key), {PREDICATE_ANNOTATION: kind})],
                               notes)
        attached.append(Attached(kind, digest, signer))
    return attached


def profile_digest(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None
