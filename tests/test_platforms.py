"""The Blackwell family from one profile: a small two-platform target (linux/amd64 for sm_120, linux/arm64 for
sm_121), built on this engine (the arm64 image under QEMU's user-mode emulation), locked per platform, verified per
architecture, refused by the gate when it lacks one, and shipped as one OCI image index pulled back per platform."""

from __future__ import annotations

import json
import re

import pytest

from support import MULTI, TEST_IMAGE, run_cli

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


def test_the_gate_refuses_an_arm64_image_that_lacks_a_declared_architecture(multi, tmp_path):
    """The same stages (reused), the arm64 image declared for sm_100 as well: the gate fails it, no arm64 tag moves."""
    project = multi["project"]
    profile = project / "sglbuild.toml"
    text = profile.read_text()
    try:
        profile.write_text(text.replace('"linux/arm64" = ["sm_121"]', '"linux/arm64" = ["sm_121", "sm_100"]')
                           .replace('tag = "multitest"', 'tag = "gatetest"'))
        r = run_cli("build", "--platform", "linux/arm64", cwd=project)
        assert r.returncode == 1, r.stderr
        assert re.search(r"verify failed: GPU code: sgltest_kernel/common_ops.so has no sm_100 SASS", r.stderr.splitlines()[-1])
        tags = {t for i in multi["client"].images.list() for t in i.tags}
        assert f"{TEST_IMAGE}:gatetest-arm64" not in tags and f"{TEST_IMAGE}:gatetest" not in tags
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
            removed[image_id] = [t for i in client.images.list() if i.id == image_id for t in i.tags]
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
