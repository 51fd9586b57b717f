"""Verdicts from evidence: any image's server command, its features on the target, settings derived from them.

Unit tests on canned probe replies; engine tests on images made without sglbuild; and tests on
the real default image (`make image`), whose real SGLang parser, Triton and FlashInfer are the
evidence the README's table comes from.
"""

from __future__ import annotations

import json
import re

import pytest

from builder.check.command import launch_server, server_command
from builder.contracts import PROBE_VERSION, GpuCode, Outcome, Runtime, StaticReply
from builder.check.features import derive, features
from builder.check.gpucode import ImageGpuCode
from builder.inputs.flags import server_flags
from builder.inputs.profile import COMPAT
from support import FAKE_SGLANG, ROOT, TEST_IMAGE, build_image, make_wheel, run_cli, small_project

REAL = "sglang:blackwell-final-v2"
FIELD_REPORT_FLAGS = ["--disable-cuda-graph", "--disable-custom-all-reduce", "--disable-flashinfer", "--disable-radix-cache",
                      "--attention-backend", "torch_native"]


# -- unit: the server command of any image ---------------------------------------------------

def test_the_server_command_is_read_from_entrypoint_cmd_shell_form_and_run_arguments():
    split = {"Entrypoint": ["python3", "-m", "sglang.launch_server"], "Cmd": ["--model-path", "m", "--disable-flashinfer"]}
    assert server_command(split, {}, None).flags == ["--model-path", "m", "--disable-flashinfer"]
    assert server_command(split, {}, ["--model-path", "q"]).flags == ["--model-path", "q"]
    shell = {"Cmd": ["/bin/sh", "-c", "cd /w && python3 -m sglang.launch_server --model-path m --port 1 && true"]}
    assert server_command(shell, {}, None).flags == ["--model-path", "m", "--port", "1"]
    none = server_command({"Cmd": ["bash"]}, {}, None)
    assert none.flags is None and "start no SGLang server" in none.source
    ours = {"Entrypoint": ["/usr/local/bin/sglbuild-entrypoint"], "Cmd": ["--help"]}
    labels = {"io.sglbuild.serve-flags": json.dumps(["--host", "0.0.0.0"])}
    assert server_command(ours, labels, None).flags == ["--host", "0.0.0.0"]
    assert server_command(ours, labels, ["--model-path", "m"]).flags == ["--host", "0.0.0.0", "--model-path", "m"]
    assert launch_server(["/usr/bin/sglang", "serve", "--model-path", "m"]) == (("/usr/bin/sglang", "serve"), ["--model-path", "m"])


# -- unit: features and derived settings from canned evidence ----------------------------------

def reply(triton_ok: bool = True, flashinfer_cubin_arch: str = "sm_100a", torch_arch: str = "sm_120") -> StaticReply:
    libs = [GpuCode("/sp/torch/lib/libtorch_cuda.so", [torch_arch], []),
            GpuCode("/sp/sgl_kernel/flash_ops.abi3.so", ["sm_80", "sm_86", "sm_90a"], []),
            GpuCode("/sp/flashinfer_cubin/cubins/x.cubin", [flashinfer_cubin_arch], [], 1, 0, "cubin")]
    triton = {"ok": True, "triton": "3.5.1", "kernel": "bf16 tl.dot 64x64 tile", "cubin": ["sm_120a"], "ptx_target": "sm_120a"} \
        if triton_ok else {"ok": False, "triton": "3.5.1", "error": "PTXASError: ptxas fatal"}
    return StaticReply(PROBE_VERSION, "3.11.2", "/p", ["/sp"], {"sglang": "0.5.9", "flashinfer-python": "0.6.3"}, Outcome(True),
                       {}, None, {"attention_backend": ["torch_native", "triton", "flashinfer", "fa3", "aiter"],
                                  "sampling_backend": ["flashinfer", "pytorch"],
                                  "switches": ["--disable-cuda-graph", "--disable-radix-cache", "--disable-custom-all-reduce"]},
                       {"sm_120": {"triton": triton, "flashinfer": {"ok": False, "error": "no JIT toolchain: nvcc missing"}}},
                       libs, {}, Runtime("/usr/bin/cc", True, True, "/usr/bin/ldd"), None)


def rows_of(r: StaticReply, arch: str = "sm_120") -> list:
    return features(r, ImageGpuCode.of(r), arch)


def table(r: StaticReply, arch: str = "sm_120") -> dict:
    return {f.name: f for f in rows_of(r, arch)}


def test_each_feature_says_why_from_its_evidence():
    rows = table(reply())
    assert rows["attention triton"].available and "sm_120a cubin" in rows["attention triton"].evidence
    assert rows["attention fa3"].available is False and "sm_80 sm_86 sm_90a, no sm_120 SASS" in rows["attention fa3"].evidence
    assert rows["attention flashinfer"].available is False and "none for sm_120" in rows["attention flashinfer"].evidence
    assert rows["attention aiter"].available is False and rows["custom all-reduce"].available is False


def test_derive_takes_the_fastest_proven_configuration_and_falls_back():
    assert derive(rows_of(reply())).attention_backend == "triton"
    fallback = derive(rows_of(reply(triton_ok=False)))
    assert fallback.attention_backend == "torch_native" and fallback.cuda_graph and fallback.radix_cache
    best = derive(rows_of(reply(flashinfer_cubin_arch="sm_120")))
    assert best.attention_backend == "flashinfer" and best.flashinfer
    assert derive(rows_of(reply(triton_ok=False, torch_arch="sm_90"))) == COMPAT  # nothing proven: the field report's flags
    assert server_flags(fallback, "0.5.9", address=False) == ["--disable-custom-all-reduce", "--attention-backend", "torch_native",
                                                               "--sampling-backend", "pytorch"]


# -- engine: an image made without sglbuild ---------------------------------------------------

@pytest.fixture(scope="module")
def foreign(tmp_path_factory, docker_client, engine, uv_wheel):
    """A hand-made image on a test base: a venv with a stand-in SGLang, its flags in ENTRYPOINT/CMD, no labels."""
    tmp = tmp_path_factory.mktemp("foreign")
    project, index = small_project(tmp, uv_wheel, None)  # for its Debian base image, the test base
    from builder.build.base import ensure_base
    from builder.build.plan import base_ref
    from builder.inputs.lockfile import read_lock
    from builder.inputs.profile import load_profile

    profile = load_profile(project / "sglbuild.toml")
    target = profile.target(None)
    lock = read_lock(profile, target)
    base = base_ref(target, lock)
    ensure_base(engine, target, lock, base)
    wheel = make_wheel(tmp / "w", "sglang", "0.5.9", files=dict(FAKE_SGLANG))
    dockerfile = f"""FROM {base}
COPY {wheel.name} /tmp/
RUN python3 -m venv /venv && /venv/bin/pip install --quiet --no-index /tmp/{wheel.name}
ENV PATH=/venv/bin:/usr/bin:/bin
ENTRYPOINT ["python3", "-m", "sglang.launch_server"]
CMD {json.dumps(["--model-path", "m", *FIELD_REPORT_FLAGS])}
"""
    ref = build_image(docker_client, dockerfile, tag="handmade", files={wheel.name: wheel.read_bytes()})
    yield {"ref": ref, "project": project}
    index.stop()


def verify_json(ref, cwd, *args):
    r = run_cli("verify", ref, "--format", "json", *args, cwd=cwd)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


def test_a_hand_made_image_is_verified_from_its_own_command(foreign):
    code, report, err = verify_json(foreign["ref"], foreign["project"], "--arch", "sm_120")
    checks = {c["id"]: c for c in report["checks"]}
    assert code == 1 and report["arch_source"] == "from --arch"
    assert checks["serve-flags"]["status"] == "fail"
    assert "from its ENTRYPOINT/CMD" in checks["serve-flags"]["detail"]
    assert checks["serve-flags"]["detail"].endswith("error: unrecognized arguments: --disable-flashinfer")  # the reason, named
    assert checks["pins"]["status"] == "skip" and "pass --lock FILE" in checks["pins"]["detail"]
    assert report["facts"]["sglang"] == "0.5.9" and report["facts"]["Python"].startswith("3.11")


def test_run_arguments_replace_cmd_and_a_lock_file_is_compared(foreign, tmp_path):
    code, report, _ = verify_json(foreign["ref"], foreign["project"], "--arch", "sm_120", "--",
                                  "--model-path", "m", "--attention-backend", "torch_native")
    assert {c["id"]: c["status"] for c in report["checks"]}["serve-flags"] == "pass", report
    lock = tmp_path / "other.lock.json"
    lock.write_text((foreign["project"] / "locks" / "smalltest.lock.json").read_text())
    code, report, _ = verify_json(foreign["ref"], foreign["project"], "--arch", "sm_120", "--lock", str(lock), "--",
                                  "--model-path", "m")
    pins = {c["id"]: c for c in report["checks"]}["pins"]
    assert pins["status"] == "fail" and "sgltest-torch absent (lock 2.9.1)" in pins["detail"]


def test_without_arch_label_or_gpu_verify_cannot_run(foreign):
    r = run_cli("verify", foreign["ref"], cwd=foreign["project"])
    assert r.returncode == 2 and "no architecture to verify for" in r.stderr and "pass --arch" in r.stderr


# -- the real default image (make image) ---------------------------------------------------------

@pytest.fixture(scope="module")
def real(docker_client):
    try:
        docker_client.images.get(REAL)
    except Exception:  # noqa: BLE001
        pytest.skip(f"{REAL} is not built on this engine: run 'make image' first")
    return REAL


def test_the_field_reports_command_fails_on_its_own_sglang(real, docker_client, tmp_path):
    """The field report's image: the same software, its flags in ENTRYPOINT/CMD, no sglbuild lock or labels."""
    ref = build_image(docker_client, tag="field-report", dockerfile=f"""FROM {real}
RUN rm -rf /usr/share/sglbuild
LABEL io.sglbuild.gpu-arch="" io.sglbuild.serve-flags="" io.sglbuild.lock-digest="" io.sglbuild.require-native=""
ENTRYPOINT ["python3", "-m", "sglang.launch_server"]
CMD {json.dumps(["--model-path", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "--host", "0.0.0.0", "--port", "8000", *FIELD_REPORT_FLAGS])}
""")
    code, report, _ = verify_json(ref, tmp_path, "--arch", "sm_120")
    checks = {c["id"]: c for c in report["checks"]}
    assert code == 1 and checks["serve-flags"]["status"] == "fail"
    assert "--disable-flashinfer" in checks["serve-flags"]["detail"].split("error:", 1)[1]  # SGLang 0.5.9's own reason
    assert "Warning" not in checks["serve-flags"]["detail"]
    assert checks["pins"]["status"] == "skip" and checks["gpu-code"]["status"] == "pass"
    assert report["facts"]["torch"] == "2.9.1+cu128 (CUDA 12.8)" and report["facts"]["sglang"] == "0.5.9"


def test_without_tritons_ptxas_triton_is_unavailable_and_derive_falls_back(real, docker_client, tmp_path):
    ref = build_image(docker_client, tag="no-ptxas", dockerfile=f"FROM {real}\nRUN rm /opt/venv/lib/python3.11/site-packages/triton/backends/nvidia/bin/ptxas\n")
    code, report, _ = verify_json(ref, tmp_path)
    rows = {f["name"]: f for f in report["features"]["sm_120"]}
    assert rows["attention triton"]["available"] is False and "ptxas" in rows["attention triton"]["evidence"].lower()
    assert rows["attention torch_native"]["available"] is True
    derived = report["derived"]["sm_120"]
    assert derived[derived.index("--attention-backend") + 1] == "torch_native"
    code, report, _ = verify_json(real, tmp_path)
    derived = report["derived"]["sm_120"]
    assert derived[derived.index("--attention-backend") + 1] == "triton"  # the untouched image


def test_the_readme_table_is_the_real_images_evidence(real):
    generated = run_cli("verify", real, "--format", "markdown", cwd=ROOT).stdout
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"<!-- features:begin -->\n(.*?)<!-- features:end -->", readme, re.S)
    assert section and section.group(1) == generated, "regenerate it: make readme-features"


def test_a_derived_target_is_built_with_what_its_own_evidence_proves(tmp_path_factory, docker_client, uv_wheel, sm120_so):
    """[serve] preset = "derived": the final stage waits for the evidence of the stage before it, then carries its flags."""
    server = '\n[[targets.derivedtest.stage]]\nname = "server"\nrequires = ["sglang==0.5.9"]\n\n[targets.derivedtest.serve]\npreset = "derived"\n'
    project, index = small_project(tmp_path_factory.mktemp("derived"), uv_wheel, sm120_so, name="derivedtest", extra=server)
    try:
        before = json.loads(run_cli("plan", "--json", cwd=project).stdout)[0]
        assert before["stages"][-1]["key"] is None and "derived flags" in before["stages"][-1]["next_build"]
        r = run_cli("build", "--json", cwd=project)
        assert r.returncode == 0, r.stderr
        flags = json.loads(docker_client.images.get(f"{TEST_IMAGE}:derivedtest").labels["io.sglbuild.serve-flags"])
        # The stand-in SGLang has no torch, no Triton and no FlashInfer beside it: nothing is proven, so the
        # derivation falls back to the field report's flags; verify reads the same evidence and agrees.
        assert flags[4:] == ["--disable-cuda-graph", "--disable-custom-all-reduce", "--disable-radix-cache",
                             "--attention-backend", "torch_native", "--sampling-backend", "pytorch"]
        code, report, _ = verify_json(f"{TEST_IMAGE}:derivedtest", project)
        assert code == 0 and report["derived"]["sm_120"] == flags[4:]
        after = json.loads(run_cli("plan", "--json", cwd=project).stdout)[0]
        assert after["stages"][-1]["key"] and after["stages"][-1]["next_build"] == "reuse"  # the evidence is remembered
        again = json.loads(run_cli("build", "--json", cwd=project).stdout)
        assert {s["status"] for s in again["stages"]} == {"reused"}
    finally:
        index.stop()
