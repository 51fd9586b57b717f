"""What the registry holds about an image: its attestations (:mod:`builder.ship.attest`), read and checked without
pulling a layer.

For REPO@sha256:... (an index: the image of the platform asked for), each referrer of the manifest that is an
in-toto attestation is fetched by digest (manifest and envelope, each checked against its digest), its DSSE
signature checked with the user's public key, and its Statement's subject checked to be that manifest. A changed
byte, another key, or a statement about another image is an integrity failure: nothing of it is reported as
attested. The attested verify report's verdicts become checks of their own; they are evidence about the image,
never a substitute for probing it, which ``verify`` still does when the image is here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..contracts import (
    ATTESTATION_ARTIFACT,
    DSSE_MEDIA_TYPE,
    IN_TOTO,
    IN_TOTO_STATEMENT,
    PREDICATE_PROVENANCE,
    PREDICATE_SBOM,
    PREDICATE_VERIFY,
)
from ..errors import InputError, IntegrityError
from ..oci import describe, split_ref
from ..sign import open_envelope
from .report import Report

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ..engine import Engine
    from ..oci import Registry

NAMES = {PREDICATE_SBOM: "SBOM", PREDICATE_PROVENANCE: "provenance", PREDICATE_VERIFY: "verify report"}


@dataclass(frozen=True)
class Attestation:
    predicate_type: str
    predicate: dict[str, Any]
    referrer: str  # the referrer manifest's digest
    signed_by: str | None  # the key ID whose signature verified (None: no key was given)
    signatures: int

    @property
    def name(self) -> str:
        return NAMES.get(self.predicate_type, self.predicate_type)

    def summary(self) -> str:
        p = self.predicate
        if self.predicate_type == PREDICATE_SBOM:
            what = f"CycloneDX {p.get('specVersion', '?')}, {len(p.get('components') or [])} components"
        elif self.predicate_type == PREDICATE_PROVENANCE:
            params = p.get("buildDefinition", {}).get("externalParameters", {})
            deps = {d.get("uri", ""): d.get("digest", {}) for d in p.get("buildDefinition", {}).get("resolvedDependencies", [])}
            lock = next((d.get("sha256", "") for uri, d in deps.items() if uri.endswith(".lock.json")), "")
            builder = p.get("runDetails", {}).get("builder", {}).get("id", "?").rsplit("/", 1)[-1]
            what = f"target {params.get('target', '?')}, lock sha256:{lock[:12]}, by {builder}"
        elif self.predicate_type == PREDICATE_VERIFY:
            what = f"{'passed' if p.get('passed') else 'FAILED'} for {', '.join(p.get('archs') or [])}"
        else:
            what = "not a kind sglbuild reads"
        signer = f"signed by {self.signed_by[:16]}" if self.signed_by else f"{self.signatures} signature(s), not checked (no --key)"
        return f"{self.name}: {what}; {signer} ({self.referrer[:19]})"


def subject_manifest(client: Registry, name: str, ref: str, digest: str, platform: str | None) -> str:
    """The digest of the image manifest REF names (an index: its image for PLATFORM)."""
    found = describe(client, name, digest)
    if found is None:
        raise InputError(f"the registry has no {ref}", "check the reference (REPO@sha256:...)")
    if not found.is_index:
        return found.top.digest
    if platform is None or platform not in found.images:
        raise InputError(f"{ref} is an index of {', '.join(sorted(found.images))}: attestations are per image",
                         "give --platform")
    return found.images[platform].digest


def read_attestations(engine: Engine, ref: str, key: Ed25519PublicKey | None, platform: str | None = None) -> tuple[str, list[Attestation]]:
    """(the image manifest's digest, its attestations, each checked), for REF = REPO@sha256:..."""
    repo, digest = split_ref(ref)
    if not digest.startswith("sha256:"):
        raise InputError(f"{ref!r} is not pinned by digest", "give REPO@sha256:...")
    client, name = engine.registry(repo)
    subject = subject_manifest(client, name, ref, digest, platform)
    found, _ = client.referrers(name, subject)
    out = []
    for descriptor in found:
        if descriptor.get("artifactType") != ATTESTATION_ARTIFACT:
            continue
        where = f"{repo}@{descriptor['digest'][:19]}"
        manifest = client.manifest(name, descriptor["digest"])  # checked against its digest
        if manifest is None:
            raise IntegrityError(f"{where}: listed as an attestation of {subject[:19]}, but the registry does not hold it")
        body = json.loads(manifest.data)
        if (body.get("subject") or {}).get("digest") != subject:
            raise IntegrityError(f"{where}: its subject is {(body.get('subject') or {}).get('digest', 'none')}, not {subject}")
        for layer in body.get("layers") or []:
            if layer.get("mediaType") != DSSE_MEDIA_TYPE:
                continue
            opened = open_envelope(client.blob(name, layer["digest"]), key, where)
            out.append(_statement(opened.payload, opened.payload_type, subject, descriptor["digest"], opened.signed_by,
                                  opened.signatures, where))
    return subject, out


def _statement(payload: bytes, payload_type: str, subject: str, referrer: str, signed_by: str | None, signatures: int,
               where: str) -> Attestation:
    if payload_type != IN_TOTO:
        raise IntegrityError(f"{where}: the envelope holds {payload_type}, not an in-toto statement")
    try:
        statement = json.loads(payload)
        subjects = [f"sha256:{s['digest']['sha256']}" for s in statement["subject"]]
        kind, predicate = statement["predicateType"], statement["predicate"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{where}: not an in-toto statement ({type(exc).__name__})") from None
    if statement.get("_type") != IN_TOTO_STATEMENT:
        raise IntegrityError(f"{where}: statement type {statement.get('_type')!r} is not {IN_TOTO_STATEMENT}")
    if subject not in subjects:
        raise IntegrityError(f"{where}: a statement about {', '.join(s[:19] for s in subjects)}, not about {subject[:19]}",
                             "it was attached to another image than the one it describes")
    return Attestation(kind, predicate, referrer, signed_by, signatures)


def attestation_checks(report: Report, attestations: list[Attestation], *, keyed: bool, required: bool) -> None:
    """REPORT's attestation checks: what was found and who signed it, and the attested verify report's verdicts."""
    report.attestations = [{"predicate_type": a.predicate_type, "referrer": a.referrer, "signed_by": a.signed_by,
                            "summary": a.summary()} for a in attestations]
    if not attestations:
        report.add("attestations", "attestations", "fail" if required else "skip", "the registry holds no attestation of this image",
                   "push it with 'sglbuild push' (which attaches them)" if required else "")
        return
    unsigned = keyed and any(a.signed_by is None for a in attestations)
    kinds = ", ".join(sorted({a.name for a in attestations}))
    signer = attestations[0].signed_by
    how = f"signed by key {signer[:16]}" if keyed and signer else "signatures not checked: give --key"
    report.add("attestations", "attestations", "fail" if unsigned else "pass", f"{len(attestations)} in-toto statements ({kinds}), {how}")
    for a in (a for a in attestations if a.predicate_type == PREDICATE_VERIFY):
        checks = a.predicate.get("checks") or []
        for arch in a.predicate.get("archs") or []:
            failed = [c for c in checks if c.get("status") == "fail" and c.get("arch") in (None, arch)]
            detail = (f"failed at push: {'; '.join(c.get('name', '?') + ': ' + c.get('detail', '')[:120] for c in failed[:3])}" if failed
                      else f"passed at push: {sum(c.get('status') == 'pass' and c.get('arch') in (None, arch) for c in checks)} checks "
                           f"on {a.predicate.get('image_id', '?')[:19]}")
            report.add("attested-verify", "attested verify", "fail" if failed else "pass", detail, arch=arch)


def verify_attested(engine: Engine, ref: str, key: Ed25519PublicKey | None, platform: str, *, required: bool) -> Report:
    """A report on REF (REPO@sha256:..., not on this engine) from its registry's attestations alone: nothing is pulled."""
    import time

    started = time.monotonic()
    subject, found = read_attestations(engine, ref, key, platform)
    verdicts = next((a.predicate for a in found if a.predicate_type == PREDICATE_VERIFY), {})
    report = Report("verify", f"{ref} (attested, not probed: pull it to probe)", subject, list(verdicts.get("archs") or []),
                    "the attested verify report" if verdicts else "none attested")
    attestation_checks(report, found, keyed=key is not None, required=required)
    report.seconds = time.monotonic() - started
    return report


def add_attestations(engine: Engine, report: Report, ref: str, key: Ed25519PublicKey | None, platform: str, *, required: bool) -> None:
    """REPORT (the probe's, of the image REF names) with the registry's attestations of it checked beside."""
    _, found = read_attestations(engine, ref, key, platform)
    attestation_checks(report, found, keyed=key is not None, required=required)
