"""The Blackwell family from one profile, end to end: a small two-platform target (linux/amd64 for sm_120, linux/arm64
for sm_121), built on this engine (the arm64 image under QEMU's user-mode emulation), locked per platform, verified per
architecture, refused by the gate when it lacks one, and shipped as one OCI image index pulled back per platform.

Then the evidence that travels with the pushed images: SBOM, provenance and verify report as signed in-toto statements,
attached to each platform's manifest in a real registry (Debian's docker-registry: the tag schema, no Referrers API),
read back without pulling a layer, checked against an independent DSSE implementation, and refused when tampered with.

Every test here shares the target's images (the session's ``multi`` fixture): one file, so that one worker builds them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time

import pytest

from builder.contracts import ATTESTATION_ARTIFACT, DSSE_MEDIA_TYPE, PREDICATE_VERIFY
from builder.oci import Registry, referrers_tag
from builder.sign import envelope, load_private
from builder.ship.attest import statement
from support import MULTI, TEST_IMAGE, RefusingRegistry, engine_tags, run_cli

pytestmark = pytest.mark.engine


def image_of(client, tag: str):
    return client.images.get(f"{TEST_IMAGE}:{tag}")


def test_each_platform_has_its_tag_and_the_bare_one_names_the_engines_own(multi):
    client = multi["client"]
    amd64, arm64, bare = image_of(client, "multitest-amd64"), image_of(client, "multitest-arm64"), image_of(client, "multitest")
    assert (amd64.attrs["Architecture"], arm64.attrs["Architecture"]) == ("amd64", "arm64")
    assert bare.id == amd64.id  # this engine is x86-64
    assert arm64.labels["io.sglbuild.gpu-arch"] == "sm_121" and amd64.labels["io.sglbuild.gpu-arch"] == "sm_120"
    out = client.containers.run(arm64.id, ["python", "-c", "import platform; print(platform.machine())"], remove=True,
                                network_disabled=True, platform="linux/arm64")
    assert out.decode().strip() == "aarch64"  # arm64 code, run by the kernel through QEMU


def test_the_lock_pins_each_platforms_closure_and_lock_check_covers_both(multi):
    project = multi["project"]
    lock = json.loads((project / "locks" / "multitest.lock.json").read_text())
    assert lock["version"] == 2 and sorted(lock["platforms"]) == ["linux/amd64", "linux/arm64"]
    kernels = {p: next(w["filename"] for w in body["wheels"] if w["name"] == "sgltest-kernel") for p, body in lock["platforms"].items()}
    assert kernels["linux/amd64"].endswith("manylinux2014_x86_64.whl") and kernels["linux/arm64"].endswith("manylinux2014_aarch64.whl")
    assert lock["platforms"]["linux/arm64"]["platform"]["machine"] == "aarch64" and lock["platforms"]["linux/arm64"]["debian"]["libc6"]
    pylock = (project / "locks" / "pylock.multitest.toml").read_text()
    assert "platform_machine == 'x86_64'" in pylock and "platform_machine == 'aarch64'" in pylock
    assert run_cli("lock", "--check", cwd=project).returncode == 0
    profile = project / "sglbuild.toml"
    text = profile.read_text()
    try:  # one platform more or less is another lock
        profile.write_text(text.replace(', "linux/arm64" = ["sm_121"]', ""))
        r = run_cli("lock", "--check", cwd=project)
        assert r.returncode == 2 and "out of date" in r.stderr
    finally:
        profile.write_text(text)


def test_the_arm64_image_is_verified_for_sm_121_and_fails_for_an_architecture_it_lacks(multi):
    project = multi["project"]
    r = run_cli("verify", f"{TEST_IMAGE}:multitest-arm64", "--format", "json", cwd=project)
    report = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert report["archs"] == ["sm_121"] and {c["id"]: c["status"] for c in report["checks"]}["gpu-code"] == "pass"
    assert "mounted in /usr/lib/aarch64-linux-gnu" in next(c["detail"] for c in report["checks"] if c["id"] == "driver-libs")
    r = run_cli("verify", f"{TEST_IMAGE}:multitest-arm64", "--arch", "sm_100,sm_121", "--format", "json", cwd=project)
    report = json.loads(r.stdout)
    verdicts = {c["arch"]: c for c in report["checks"] if c["id"] == "gpu-code"}
    assert r.returncode == 1 and verdicts["sm_121"]["status"] == "pass" and verdicts["sm_100"]["status"] == "fail"
    assert "sgltest_kernel/common_ops.so has no sm_100 SASS (sm_121a)" in verdicts["sm_100"]["detail"]
    assert "failed 1 check(s): GPU code (sm_100)" in r.stderr


def test_the_gate_refuses_a_platforms_image_that_lacks_a_declared_architecture(multi, tmp_path):
    """The same stages (reused), the amd64 image declared for sm_100 as well: the gate fails it for that architecture, no
    tag of the target moves. (The gate judges each platform's image for its own architectures; amd64's is the cheap one
    to judge here, arm64's runs emulated: its verify above fails sm_100 the same way.)"""
    project = multi["project"]
    profile = project / "sglbuild.toml"
    text = profile.read_text()
    try:
        profile.write_text(text.replace('"linux/amd64" = ["sm_120"]', '"linux/amd64" = ["sm_120", "sm_100"]')
                           .replace('tag = "multitest"', 'tag = "gatetest"'))
        r = run_cli("build", "--platform", "linux/amd64", cwd=project)
        assert r.returncode == 1, r.stderr
        assert re.search(r"verify failed: GPU code: sgltest_kernel/common_ops.so has no sm_100 SASS", r.stderr.splitlines()[-1])
        tags = set(engine_tags(multi["client"]))
        assert f"{TEST_IMAGE}:gatetest-amd64" not in tags and f"{TEST_IMAGE}:gatetest" not in tags
    finally:
        profile.write_text(text)


def test_one_index_is_pushed_and_each_platform_pulled_back_by_digest(multi, registry):
    client, project = multi["client"], multi["project"]
    repo = f"{registry}/sglbuild-test/multi"
    r = run_cli("push", "multitest", repo, cwd=project)
    assert r.returncode == 0, r.stderr
    index_ref = r.stdout.strip()
    assert re.fullmatch(rf"{re.escape(repo)}@sha256:[0-9a-f]{{64}}", index_ref)
    r = run_cli("inspect", index_ref, cwd=project)
    assert r.returncode == 0 and r.stdout.startswith("index ") and "linux/amd64" in r.stdout and "linux/arm64" in r.stdout
    ids = {p: image_of(client, f"multitest-{p.split('/')[1]}").id for p in MULTI}
    removed: dict[str, list[str]] = {}
    try:
        for platform, image_id in ids.items():  # a machine of each kind: none of its image here, a pull by the index's digest
            # The engine's own list, not docker-py's (which inspects each image: one another worker removes meanwhile
            # would fail the list).
            removed[image_id] = [t for i in client.api.images() if i["Id"] == image_id for t in i.get("RepoTags") or []]
            for tag in removed[image_id]:
                client.images.remove(tag, force=True)
            r = run_cli("verify", index_ref, "--platform", platform, "--format", "json", cwd=project)
            assert r.returncode == 0, r.stderr
            report = json.loads(r.stdout)
            assert report["image_id"] == image_id and platform in report["subject"]
            assert client.images.get(image_id).attrs["Architecture"] == platform.split("/")[1]
    finally:  # the tags back on the pulled images: the shared target's later tests (the attestations') push them
        for image_id, tags in removed.items():
            for tag in tags:
                client.images.get(image_id).tag(tag)
    r = run_cli("promote", index_ref, "stable", cwd=project)
    assert r.returncode == 0 and r.stdout.strip() == f"{repo}:stable -> {index_ref}"


def test_a_machine_that_cannot_run_arm64_code_is_told_what_to_install(multi, tmp_path):
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "status").write_text("enabled\n")
    r = run_cli("build", "--platform", "linux/arm64", cwd=multi["project"], env={"SGLBUILD_BINFMT_DIR": str(binfmt)})
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1
    assert "cannot run linux/arm64 code: no binfmt_misc handler for aarch64 (run ci/bootstrap-host.sh as root" in r.stderr
    r = run_cli("build", "--platform", "linux/arm64", cwd=multi["project"], env={"SGLBUILD_BINFMT_DIR": str(tmp_path / "none")})
    assert r.returncode == 3 and "binfmt_misc is not mounted" in r.stderr
    # Debian 12's QEMU registers the handler, but dies importing torch's aarch64 build: refused before any step.
    old = tmp_path / "qemu-aarch64-7.2"
    old.write_text("#!/bin/sh\necho 'qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)'\n")
    old.chmod(0o755)
    (binfmt / "qemu-aarch64").write_text(f"enabled\ninterpreter {old}\nflags: PF\noffset 0\nmagic 7f454c46\n")
    r = run_cli("build", "--platform", "linux/arm64", cwd=multi["project"], env={"SGLBUILD_BINFMT_DIR": str(binfmt)})
    assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1
    assert "the qemu-aarch64 handler is QEMU 7.2, which dies importing torch's aarch64 build" in r.stderr


# -- attestations of the pushed index ----------------------------------------------------------------


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
    since = int(time.time())
    r, report = verify(pushed, "--platform", "linux/arm64", "--key", str(keys / "release.pub"))
    assert r.returncode == 0, r.stderr
    checks = {(c["id"], c["arch"]): c for c in report["checks"]}
    assert checks[("attestations", None)]["status"] == "pass" and "3 in-toto statements" in checks[("attestations", None)]["detail"]
    assert checks[("attested-verify", "sm_121")]["status"] == "pass" and report["image_id"] == pushed["digests"]["linux/arm64"]
    assert "attested, not probed" in report["subject"]
    pulls = pushed["client"].events(since=since, until=int(time.time()) + 1, decode=True, filters={"type": "image", "event": "pull"})
    assert not [e for e in pulls if pushed["repo"] in e.get("id", "")]  # nothing pulled (the engine's own event log)
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


def test_a_registry_that_refuses_the_attestations_gets_one_line_and_nothing_recorded_as_pushed(pushed, registry, keys):
    """Through a proxy that refuses artifact manifests, to the repository the image was pushed to before (its layers are
    there: the proxy forwards a few small requests, not the layers)."""
    from builder.state import state_dir

    multi = pushed
    proxy = RefusingRegistry(registry, host=registry.split(":")[0])
    try:
        pushes = state_dir() / "pushes.json"
        before = pushes.read_text() if pushes.exists() else ""
        r = run_cli("push", "sglbuild-test/app:multitest-amd64", f"{proxy.address}/{pushed['name']}", "--sign-key",
                    str(keys / "release.key"), cwd=multi["project"])
        assert r.returncode == 4 and proxy.refused == 1
        assert r.stderr.strip().splitlines()[-1].startswith("sglbuild: error: the registry ") and "HTTP 403" in r.stderr
        assert "Traceback" not in r.stderr and (pushes.read_text() if pushes.exists() else "") == before
    finally:
        proxy.stop()
        for tag in [t for t in engine_tags(multi["client"]) if proxy.address in t]:
            multi["client"].images.remove(tag)


def test_fetch_for_one_platform_downloads_only_its_files(multi, tmp_path):
    """A machine that builds one platform of a family fetches that one's closure (the aarch64 kernel wheel, not x86-64's)."""
    wheels = tmp_path / "wheels"
    r = run_cli("--wheels", str(wheels), "fetch", "--platform", "linux/arm64", cwd=multi["project"])
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in wheels.glob("*.whl"))
    assert any(n.endswith("manylinux2014_aarch64.whl") for n in names) and not any("x86_64" in n for n in names), names
    r = run_cli("--wheels", str(wheels), "fetch", "--platform", "linux/s390x", cwd=multi["project"])
    assert r.returncode == 2 and "has no platform linux/s390x" in r.stderr


# -- the CI pipeline of the family: a job per platform, joined by digest, promoted on every platform's verdict ------

def _layer_bytes(pushed) -> int:
    return sum(layer["size"] for d in pushed["digests"].values()
               for layer in json.loads(pushed["oci"].manifest(pushed["name"], d).data)["layers"])


def test_join_writes_the_index_from_the_platforms_digests_reading_no_layer(pushed, keys):
    refs = [f"{pushed['repo']}@{d}" for d in pushed["digests"].values()]
    r = run_cli("join", "multitest", *reversed(refs), "--key", str(keys / "release.pub"), "--json", cwd=pushed["project"])
    assert r.returncode == 0, r.stderr
    joined = json.loads(r.stdout)
    # The same index push TARGET made in one go, whatever order the jobs finished in: the same bytes, the same digest.
    assert joined["index"] == pushed["ref"] and joined["platforms"] == pushed["digests"]
    assert 0 < joined["bytes_read"] < _layer_bytes(pushed) / 100  # manifests, configs, attestations: no layer


def test_join_refuses_a_missing_platform_a_twice_given_one_and_another_key_pushing_nothing(pushed, keys):
    project, pub = pushed["project"], str(keys / "release.pub")
    amd64, arm64 = (f"{pushed['repo']}@{pushed['digests'][p]}" for p in ("linux/amd64", "linux/arm64"))
    tags_before = pushed["oci"].request("GET", f"{pushed['name']}/tags/list").json()["tags"]
    r = run_cli("join", "multitest", amd64, "--key", pub, cwd=project)
    assert r.returncode == 2 and "no image for linux/arm64 of multitest; no index was pushed" in r.stderr
    r = run_cli("join", "multitest", amd64, amd64, arm64, "--key", pub, cwd=project)
    assert r.returncode == 2 and "two images for linux/amd64" in r.stderr
    r = run_cli("join", "multitest", amd64, arm64, "--key", str(keys / "other.pub"), cwd=project)
    assert r.returncode == 5 and "no signature by key" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("join", "multitest", amd64, f"{pushed['repo']}@sha256:{'0' * 64}", "--key", pub, cwd=project)
    assert r.returncode == 2 and "the registry has no" in r.stderr
    assert pushed["oci"].request("GET", f"{pushed['name']}/tags/list").json()["tags"] == tags_before


def test_join_refuses_a_platform_whose_attested_verdicts_failed(pushed, keys):
    digest = pushed["digests"]["linux/arm64"]
    failing = {"passed": False, "archs": ["sm_121"], "image_id": digest,
               "checks": [{"id": "gpu-code", "name": "GPU code", "status": "fail", "detail": "no sm_121 SASS", "arch": "sm_121"}]}
    tag, before = _attach(pushed, statement(pushed["repo"], digest, PREDICATE_VERIFY, failing), keys / "release.key")
    try:
        refs = [f"{pushed['repo']}@{d}" for d in pushed["digests"].values()]
        r = run_cli("join", "multitest", *refs, "--key", str(keys / "release.pub"), cwd=pushed["project"])
    finally:
        _restore(pushed, tag, before)
    assert r.returncode == 1 and "(linux/arm64): attested verify: " in r.stderr and "no index was pushed" in r.stderr


def test_promote_waits_for_every_platforms_verdict(pushed, keys, tmp_path):
    project, ref = pushed["project"], pushed["ref"]
    verdicts = {}
    for platform in ("linux/amd64", "linux/arm64"):
        path = tmp_path / f"{platform.split('/')[1]}.json"
        r = run_cli("verify", ref, "--platform", platform, "--key", str(keys / "release.pub"), "--format", "json",
                    "--output", str(path), cwd=project)
        assert r.returncode == 0, r.stderr
        verdicts[platform] = str(path)
    r = run_cli("promote", "--verdicts", verdicts["linux/amd64"], ref, "promoted", cwd=project)
    assert r.returncode == 1 and "(linux/arm64 of linux/amd64, linux/arm64) has not passed 'verify' in the verdicts given" in r.stderr
    r = run_cli("promote", "--require-gpu", "--verdicts", verdicts["linux/amd64"], "--verdicts", verdicts["linux/arm64"], ref,
                "promoted", cwd=project)
    assert r.returncode == 1 and "linux/amd64, linux/arm64 of" in r.stderr  # no GPU judged either: the GPU gate holds
    (tmp_path / "bad.json").write_text("{not json")
    r = run_cli("promote", "--verdicts", str(tmp_path / "bad.json"), ref, "promoted", cwd=project)
    assert r.returncode == 2 and "is not a verify report" in r.stderr
    assert "promoted" not in pushed["oci"].request("GET", f"{pushed['name']}/tags/list").json()["tags"]
    r = run_cli("promote", "--verdicts", verdicts["linux/amd64"], "--verdicts", verdicts["linux/arm64"], ref, "promoted", cwd=project)
    assert r.returncode == 0, r.stderr
    assert pushed["oci"].manifest(pushed["name"], "promoted").digest == ref.split("@")[1]


def test_the_pipeline_runs_a_job_per_platform_then_joins_verifies_and_promotes(multi, registry):
    """ci/pipeline.sh on the two-platform target: each platform's job (here both on this engine; make pipeline gives
    arm64 the second engine), the join of their digests, a verify of each platform by the index's digest, promote."""
    from test_pipeline import manifest_digest, run_pipeline

    project = multi["project"]
    repo = f"{registry}/sglbuild-test/family-pipeline"
    r = run_pipeline(project, repo, project / "pipeline-state", GPU="off")
    assert r.returncode == 0, r.stderr
    out = project / "out" / "pipeline"
    joined = json.loads((out / "join.json").read_text())
    digests = {f"linux/{a}": (out / f"digest-{a}.txt").read_text().strip() for a in ("amd64", "arm64")}
    assert {p: f"{repo}@{d}" for p, d in joined["platforms"].items()} == digests  # the jobs' outputs, joined
    assert r.stdout.strip().splitlines()[-1] == joined["index"]
    assert manifest_digest(registry, "sglbuild-test/family-pipeline", "multitest") == joined["index"].split("@")[1]
    for arch in ("amd64", "arm64"):
        verdict = json.loads((out / f"verdict-{arch}.json").read_text())
        assert verdict["passed"] and verdict["image_id"] == joined["platforms"][f"linux/{arch}"]
    assert "== job linux/arm64" in r.stderr and "== join" in r.stderr
