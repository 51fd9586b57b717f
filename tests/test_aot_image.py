"""FlashInfer's modules ahead of time, on the real images: `sglang:blackwell-amd64` and `sglang:blackwell-arm64` as
`sglbuild build blackwell` makes them (amd64's flashinfer-aot stage compiles natively, about 7 minutes on 2 cores;
arm64's modules are cross-compiled on amd64 and only unpacked on arm64). verify resolves every declared module with the
image's own FlashInfer, JIT off (arm64's under emulation); the SASS sglbuild reads in each module equals cuobjdump's and
covers the platform's architectures; arm64's modules are aarch64 code; and the same image with one module removed fails,
naming it. Heavy (the 9-11 GB images, probes under emulation): make test-full."""

from __future__ import annotations

import json

import pytest

from authority import cuobjdump_listing, find_cuobjdump
from builder.contracts import LABEL_FLASHINFER_AOT
from builder.engine.images import tar_member_bytes
from builder.probe.fatbin import scan_file
from support import ROOT, build_image, run_cli

pytestmark = [pytest.mark.engine, pytest.mark.full]
IMAGE = "sglang:blackwell-amd64"
PLATFORMS = {"linux/amd64": ("sglang:blackwell-amd64", ("sm_100", "sm_120"), 62), "linux/arm64": ("sglang:blackwell-arm64", ("sm_100", "sm_121"), 183)}


def built(docker_client, ref: str, platform: str):
    try:
        found = docker_client.images.get(ref)
    except Exception:  # noqa: BLE001
        pytest.skip(f"{ref} is not built here: run 'sglbuild build blackwell --platform {platform}'")
    assert LABEL_FLASHINFER_AOT in found.labels, f"{ref} was built without [flashinfer_aot]"
    return found


@pytest.fixture(scope="module")
def image(docker_client):
    return built(docker_client, IMAGE, "linux/amd64")


def verify(ref: str) -> tuple[int, dict, str]:
    r = run_cli("verify", ref, "--format", "json", "--fresh", cwd=ROOT, timeout=900)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


def aot_checks(report: dict) -> dict[str, dict]:
    return {c["arch"]: c for c in report["checks"] if c["id"] == "flashinfer-aot"}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_every_declared_module_is_prebuilt_and_its_sass_is_what_cuobjdump_lists(platform, docker_client, engine, tmp_path):
    ref, archs, machine = PLATFORMS[platform]
    image = built(docker_client, ref, platform)
    code, report, err = verify(ref)
    assert code == 0, err
    checks = aot_checks(report)
    assert set(checks) == set(archs) and all(c["status"] == "pass" for c in checks.values())
    rows = {arch: next(f for f in report["features"][arch] if f["name"] == "flashinfer modules prebuilt") for arch in checks}
    assert all(r["available"] is True and r["evidence"].startswith("prebuilt: ") for r in rows.values())
    # The modules' files, out of the image, read by sglbuild's reader and by cuobjdump.
    tool = find_cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (nvidia-cuda-cuobjdump, a test dependency)")
    archive = engine.images.archive(image.id, "/opt/venv/lib/python3.11/site-packages/flashinfer/data/aot")
    for name, data in tar_member_bytes(archive).items():
        (tmp_path / name).write_bytes(data)
    files = sorted(tmp_path.glob("*.so"))
    assert len(files) == 6
    for f in files:
        assert int.from_bytes(f.read_bytes()[18:20], "little") == machine, f"{f.name}: not {platform} code"
        ours = scan_file(f)
        theirs = cuobjdump_listing(tool, f)
        assert tuple(sorted(set(ours.sass))) == theirs.sass, f.name
        assert {a.rstrip("af") for a in theirs.sass} == set(archs), f.name


def test_an_image_with_one_module_removed_fails_naming_it(image, docker_client):
    site = "/opt/venv/lib/python3.11/site-packages/flashinfer/data/aot"
    gone = "batch_decode_with_kv_cache_dtype_q_bf16_dtype_kv_e4m3_dtype_o_bf16_dtype_idx_i32_head_dim_qk_128_head_dim_vo_128_posenc_0_use_swa_False_use_logits_cap_False"
    tag = build_image(docker_client, f"FROM {IMAGE}\nRUN rm -r {site}/{gone}\n", tag="aot-one-removed")
    try:
        code, report, err = verify(tag)
        assert code == 1 and "FlashInfer modules" in err
        for arch, check in aot_checks(report).items():
            assert check["status"] == "fail"
            assert check["detail"] == f"1 of 6 declared modules compile at first use on {arch}: {gone} (no prebuilt file)"
        assert next(f for f in report["features"]["sm_120"] if f["name"] == "flashinfer modules prebuilt")["available"] is False
    finally:
        docker_client.images.remove(tag, force=True)
