"""Evidence that travels with the pushed image: SBOM, provenance and verify report as signed in-toto statements, attached
to each platform's manifest in a real registry (Debian's docker-registry: the tag schema, no Referrers API), read back
without pulling a layer, checked against an independent DSSE implementation, and refused when tampered with."""

from __future__ import annotations

import base64
import json
import os

import pytest

from builder.contracts import ATTESTATION_ARTIFACT, DSSE_MEDIA_TYPE, PREDICATE_VERIFY
from builder.oci import Registry, referrers_tag
from builder.sign import envelope, load_private
from builder.ship.attest import statement
from support import RefusingRegistry, run_cli

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("release", "other"):
        r = run_cli("keygen", "--output", str(d / name), cwd=d)
        assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="module")
def pushed(multi, registry, keys):
    repo = f"{registry}/sglbuild-test/attested"
    r = run_cli("push", "multitest", repo, "--sign-key", str(keys / "release.key"), cwd=multi["project"])
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("attested sha256:") == 2 and "SBOM, provenance, verify report (signed by" in r.stderr
    host, _, name = repo.partition("/")
    client = Registry(host, insecure=True)
    index = json.loads(client.manifest(name, r.stdout.strip().split("@")[1]).data)
    digests = {f"linux/{m['platform']['architecture']}": m["digest"] for m in index["manifests"]}
    return {**multi, "repo": repo, "ref": r.stdout.strip(), "oci": client, "name": name, "digests": digests}


def verify(pushed, *args, ref=None):
    r = run_cli("verify", ref or pushed["ref"], "--format", "json", *args, cwd=pushed["project"])
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(keys):
    assert oct(os.stat(keys / "release.key").st_mode & 0o777) == "0o600"
    assert (keys / "release.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    r = run_cli("keygen", "--output", str(keys / "release"), cwd=keys)
    assert r.returncode == 2 and "exists: sglbuild does not overwrite a key" in r.stderr


def test_each_platforms_manifest_carries_three_signed_statements_the_image_digest_unchanged(pushed):
    client, name = pushed["oci"], pushed["name"]
    for platform, digest in pushed["digests"].items():
        found = json.loads(client.manifest(name, referrers_tag(digest)).data)["manifests"]
        kinds = sorted(m["annotations"]["in-toto.io/predicate-type"] for m in found)
        assert kinds == ["https://cyclonedx.org/bom", "https://github.com/sglbuild/sglbuild/verify-report/v1",
                         "https://slsa.dev/provenance/v1"], platform
        assert all(m["artifactType"] == ATTESTATION_ARTIFACT for m in found)
    # The index and manifests are what push made; attaching wrote referrers beside them, not into them.
    top = json.loads(client.manifest(name, pushed["ref"].split("@")[1]).data)
    assert {m["digest"] for m in top["manifests"]} == set(pushed["digests"].values())


def test_the_envelopes_verify_with_an_independent_dsse_implementation(pushed, keys):
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    client, name = pushed["oci"], pushed["name"]
    digest = pushed["digests"]["linux/arm64"]
    referrer = json.loads(client.manifest(name, referrers_tag(digest)).data)["manifests"][0]
    layer = json.loads(client.manifest(name, referrer["digest"]).data)["layers"][0]
    assert layer["mediaType"] == DSSE_MEDIA_TYPE
    env = Envelope.from_dict(json.loads(client.blob(name, layer["digest"])))
    keyid = next(iter(env.signatures))
    pem = serialization.load_pem_public_key

    key = SSlibKey.from_crypto(pem((keys / "release.pub").read_bytes()), keyid=keyid, scheme="ed25519")
    assert keyid in env.verify([key], 1)
    assert json.loads(env.payload)["subject"][0]["digest"]["sha256"] == digest.split(":")[1]
    other = SSlibKey.from_crypto(pem((keys / "other.pub").read_bytes()), keyid=keyid, scheme="ed25519")
    with pytest.raises(VerificationError):
        env.verify([other], 1)


def test_verify_by_digest_reads_the_attested_verdicts_without_pulling_a_layer(pushed, keys):
    images_before = {i.id for i in pushed["client"].images.list()}
    r, report = verify(pushed, "--platform", "linux/arm64", "--key", str(keys / "release.pub"))
    assert r.returncode == 0, r.stderr
    checks = {(c["id"], c["arch"]): c for c in report["checks"]}
    assert checks[("attestations", None)]["status"] == "pass" and "3 in-toto statements" in checks[("attestations", None)]["detail"]
    assert checks[("attested-verify", "sm_121")]["status"] == "pass" and report["image_id"] == pushed["digests"]["linux/arm64"]
    assert "attested, not probed" in report["subject"]
    assert {i.id for i in pushed["client"].images.list()} == images_before  # nothing pulled
    r = run_cli("inspect", pushed["ref"], "--key", str(keys / "release.pub"), cwd=pushed["project"])
    assert r.returncode == 0 and r.stdout.count("signed by ") == 6 and "attested (linux/arm64)  verify report: passed for sm_121" in r.stdout


def _attach(pushed, body: bytes, key_path, *, tamper: bool = False) -> tuple[str, bytes]:
    """Attach BODY (a statement) signed with KEY_PATH to the arm64 manifest; returns the referrers tag and the index before."""
    client, name = pushed["oci"], pushed["name"]
    subject = client.manifest(name, pushed["digests"]["linux/arm64"])
    tag = referrers_tag(subject.digest)
    before = client.manifest(name, tag).data
    env = envelope(body, load_private(key_path))
    if tamper:  # one byte of the signed payload changed after signing
        data = json.loads(env)
        payload = bytearray(base64.b64decode(data["payload"]))
        payload[payload.index(b"sm_121")] ^= 1
        data["payload"] = base64.b64encode(bytes(payload)).decode()
        env = json.dumps(data).encode()
    client.attach(name, subject, ATTESTATION_ARTIFACT, [(DSSE_MEDIA_TYPE, env, {})], {"in-toto.io/predicate-type": PREDICATE_VERIFY})
    return tag, before


def _restore(pushed, tag: str, before: bytes) -> None:
    pushed["oci"].put_manifest(pushed["name"], tag, "application/vnd.oci.image.index.v1+json", before)


@pytest.mark.parametrize("case", ["changed byte", "another digest", "failing verdicts"])
def test_tampered_or_failing_attestations_are_refused(pushed, keys, case):
    digest = pushed["digests"]["linux/arm64"]
    subject = pushed["digests"]["linux/amd64"] if case == "another digest" else digest
    verdicts = {"passed": case != "failing verdicts", "archs": ["sm_121"], "image_id": digest,
                "checks": [{"id": "gpu-code", "name": "GPU code", "status": "fail" if case == "failing verdicts" else "pass",
                            "detail": "sgltest_kernel/common_ops.so has no sm_121 SASS", "arch": "sm_121"}]}
    tag, before = _attach(pushed, statement(pushed["repo"], subject, PREDICATE_VERIFY, verdicts), keys / "release.key",
                          tamper=case == "changed byte")
    try:
        r, report = verify(pushed, "--platform", "linux/arm64", "--key", str(keys / "release.pub"))
    finally:
        _restore(pushed, tag, before)
    last = r.stderr.strip().splitlines()[-1]
    if case == "failing verdicts":
        assert r.returncode == 1 and last.endswith("failed 1 check(s): attested verify")
        assert any(c["id"] == "attested-verify" and c["status"] == "fail" and "no sm_121 SASS" in c["detail"] for c in report["checks"])
    else:
        assert r.returncode == 5 and last.startswith("sglbuild: error: ") and "Traceback" not in r.stderr
        assert ("no signature by key" in last) if case == "changed byte" else ("not about" in last)


def test_the_wrong_key_is_an_integrity_failure_and_a_missing_attestation_fails_when_required(pushed, keys, registry, multi):
    r, _ = verify(pushed, "--platform", "linux/arm64", "--key", str(keys / "other.pub"))
    assert r.returncode == 5 and "no signature by key" in r.stderr.strip().splitlines()[-1]
    # An image pushed by the engine alone (docker push): nothing attested.
    client = multi["client"]
    bare = f"{registry}/sglbuild-test/bare"
    client.images.get("sglbuild-test/app:multitest-amd64").tag(bare, "plain")
    client.images.push(bare, "plain")
    digest = Registry(registry, insecure=True).manifest("sglbuild-test/bare", "plain").digest
    r, report = verify(pushed, "--key", str(keys / "release.pub"), "--require-attestation", ref=f"{bare}@{digest}")
    assert r.returncode == 1 and report is not None
    assert any(c["id"] == "attestations" and c["status"] == "fail" for c in report["checks"])
    client.images.remove(f"{bare}:plain")


def test_a_registry_that_refuses_the_attestations_gets_one_line_and_nothing_recorded_as_pushed(multi, registry, keys):
    from builder.state import state_dir

    proxy = RefusingRegistry(registry, host=registry.split(":")[0])
    try:
        pushes = state_dir() / "pushes.json"
        before = pushes.read_text() if pushes.exists() else ""
        r = run_cli("push", "sglbuild-test/app:multitest-amd64", f"{proxy.address}/sglbuild-test/refused", "--sign-key",
                    str(keys / "release.key"), cwd=multi["project"])
        assert r.returncode == 4 and proxy.refused == 1
        assert r.stderr.strip().splitlines()[-1].startswith("sglbuild: error: the registry ") and "HTTP 403" in r.stderr
        assert "Traceback" not in r.stderr and (pushes.read_text() if pushes.exists() else "") == before
    finally:
        proxy.stop()
        for tag in [t for i in multi["client"].images.list() for t in i.tags if proxy.address in t]:
            multi["client"].images.remove(tag)
