"""Verdicts from evidence: any image's server command, its features on the target, settings derived from them.

Unit tests on canned probe replies; engine tests on images made without sglbuild; and tests on
the real default image (`make image`), whose real SGLang parser, Triton and FlashInfer are the
evidence the README's table comes from.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace

import pytest

from builder.check.evidence import evidence_jit
from builder.assemble.plan import make_plan
from builder.check.command import launch_server, server_command
from builder.contracts import PROBE_VERSION, FlashinferJit, GpuCode, JitAnswer, Outcome, Runtime, StaticReply
from builder.check.command import ServerCommand
from builder.check.features import derive, features, sglang_default
from builder.check.report import Report
from builder.check.verify import check_flags
from builder.check.gpucode import ImageGpuCode
from builder.engine.records import ImageConfig
from builder.inputs.serving import server_flags
from builder.inputs.lockfile import read_lock
from builder.inputs.profile import COMPAT, load_profile
from support import FAKE_SGLANG, ROOT, TEST_IMAGE, build_image, make_wheel, run_cli, small_project

REAL = "sglang:blackwell-final-v2"
FIELD_REPORT_FLAGS = ["--disable-cuda-graph", "--disable-custom-all-reduce", "--disable-flashinfer", "--disable-radix-cache",
                      "--attention-backend", "torch_native"]


# -- unit: the server command of any image ---------------------------------------------------

def test_the_server_command_is_read_from_entrypoint_cmd_shell_form_and_run_arguments():
    split = ImageConfig(entrypoint=("python3", "-m", "sglang.launch_server"), cmd=("--model-path", "m", "--disable-flashinfer"))
    assert server_command(split, {}, None).flags == ["--model-path", "m", "--disable-flashinfer"]
    assert server_command(split, {}, ["--model-path", "q"]).flags == ["--model-path", "q"]
    shell = ImageConfig(cmd=("/bin/sh", "-c", "cd /w && python3 -m sglang.launch_server --model-path m --port 1 && true"))
    assert server_command(shell, {}, None).flags == ["--model-path", "m", "--port", "1"]
    none = server_command(ImageConfig(cmd=("bash",)), {}, None)
    assert none.flags is None and "start no SGLang server" in none.source
    ours = ImageConfig(entrypoint=("/usr/local/bin/sglbuild-entrypoint",), cmd=("--help",))
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
                       {"sm_120": JitAnswer.from_dict({"target": "sm_120", "triton": triton,
                                                       "flashinfer": {"ok": False, "error": "no JIT toolchain: nvcc missing"}})},
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


# SGLang 0.5.23's --attention-backend choices (its arg_groups/choices.py), and 0.5.x's cutlass_mla.
SGLANG_0523_BACKENDS = ["triton", "torch_native", "flex_attention", "dsa", "nsa", "qsa", "dsv4", "compressed", "fa3", "fa4",
                        "flashinfer", "llada2_cfg_flashinfer", "flashmla", "trtllm_mla", "cutedsl_mla", "tokenspeed_mla",
                        "trtllm_mha", "hpc_ops", "minicpm_flashattn", "minicpm_flashinfer", "aiter", "wave", "intel_amx",
                        "ascend", "intel_xpu", "cutlass_mla"]


def blackwell_reply(jit_ok: bool = True, cubins: tuple[str, ...] = (), defaults: dict | None = None) -> StaticReply:
    """A CUDA 13 image like `blackwell`: FlashInfer with (or without) its JIT toolchain, flash-attn-4, no flashinfer-cubin."""
    r = reply()
    r.dists = {"sglang": "0.5.23", "flashinfer-python": "0.7.2", "flash-attn-4": "4.0.0b36", "nvidia-cutlass-dsl": "4.8.0"}
    r.libraries = [lib for lib in r.libraries if "flashinfer_cubin" not in lib.path]
    r.libraries += [GpuCode(f"/sp/flashinfer_cubin/cubins/{a}.cubin", [a], [], 1, 0, "cubin") for a in cubins]
    r.server_options = {**r.server_options, "attention_backend": SGLANG_0523_BACKENDS}
    fi = {"ok": True, "module": "batch decode (bf16, paged KV, head dim 128)", "sass": ["sm_100a", "sm_120f"]} if jit_ok \
        else {"ok": False, "error": "no JIT toolchain: cxx missing"}
    r.jit = {a: JitAnswer(a, r.jit["sm_120"].triton, FlashinferJit(**fi)) for a in ("sm_90", "sm_100", "sm_120", "sm_121")}
    r.defaults = defaults
    return r


@pytest.mark.parametrize("arch", ["sm_90", "sm_100", "sm_120", "sm_121"])
def test_every_backend_the_locked_sglang_offers_has_a_rule_or_a_stated_reason(arch):
    rows = table(blackwell_reply(), arch)
    assert [b for b in SGLANG_0523_BACKENDS if "no evidence rule" in rows[f"attention {b}"].evidence] == []
    unknown = {b: rows[f"attention {b}"].evidence for b in SGLANG_0523_BACKENDS if rows[f"attention {b}"].available is None}
    assert set(unknown) <= {"dsa", "nsa", "qsa", "dsv4", "compressed", "fa4", "cutedsl_mla", "tokenspeed_mla", "hpc_ops"}
    assert all(("model family" in why or "CuTe DSL" in why or "Hopper" in why) for why in unknown.values())


def test_trtllm_mha_follows_the_code_xqa_jit_on_sm90_and_sm12x_trtllm_gen_cubins_on_sm100():
    rows = {a: table(blackwell_reply(), a) for a in ("sm_90", "sm_100", "sm_120", "sm_121")}
    for arch in ("sm_90", "sm_120", "sm_121"):
        f = rows[arch]["attention trtllm_mha"]
        assert f.available and f"XQA decode and fmha_v2 prefill on {arch} is JIT-compiled by FlashInfer" in f.evidence
    sm100 = rows["sm_100"]["attention trtllm_mha"]
    assert sm100.available is False and "no flashinfer-cubin" in sm100.evidence
    assert table(blackwell_reply(cubins=("sm_100a",)), "sm_100")["attention trtllm_mha"].available
    assert rows["sm_120"]["attention trtllm_mla"].available and rows["sm_90"]["attention trtllm_mla"].available is False
    no_compiler = table(blackwell_reply(jit_ok=False), "sm_120")
    assert no_compiler["attention trtllm_mha"].available is False and "cxx missing" in no_compiler["attention trtllm_mha"].evidence
    assert rows["sm_120"]["attention fa3"].available is False and "SM8x/SM90" in rows["sm_120"]["attention fa3"].evidence
    assert rows["sm_120"]["attention cutedsl_mla"].available is False and rows["sm_120"]["attention cutlass_mla"].available is False
    # No custom all-reduce on sm_12x, each for its reason: PCIe cards without peer links, DGX Spark's one GPU.
    assert "PCIe-only" in rows["sm_120"]["custom all-reduce"].evidence and rows["sm_120"]["custom all-reduce"].available is False
    assert "one GPU per machine" in rows["sm_121"]["custom all-reduce"].evidence and rows["sm_121"]["custom all-reduce"].available is False
    # A JIT answer made in the build's evidence stage is said so, in the rows that rest on it.
    reused = blackwell_reply()
    reused.jit = {a: replace(j, compiled_in="sha256:" + "ab" * 32) for a, j in reused.jit.items()}
    assert table(reused, "sm_120")["attention flashinfer"].evidence.endswith("[compiled in the build's evidence stage sha256:abababababab, the same files]")
    assert "compiled in" not in rows["sm_120"]["attention flashinfer"].evidence


def test_derive_takes_sglangs_own_pick_where_the_evidence_proves_it():
    picks = {"sm_120": {"attention_backend": "flashinfer", "sampling_backend": "flashinfer"},
             "sm_100": {"attention_backend": "trtllm_mha", "sampling_backend": "flashinfer"}}
    r = blackwell_reply(defaults=picks)
    assert derive(rows_of(r, "sm_120"), sglang_default(r, ["sm_120"])).attention_backend == "flashinfer"
    assert derive(rows_of(r, "sm_100"), sglang_default(r, ["sm_100"])).attention_backend == "flashinfer"  # trtllm-gen: no cubins
    with_cubins = blackwell_reply(cubins=("sm_100a",), defaults=picks)
    assert derive(rows_of(with_cubins, "sm_100"), sglang_default(with_cubins, ["sm_100"])).attention_backend == "trtllm_mha"
    assert sglang_default(r, ["sm_100", "sm_120"]) is None  # they disagree: the evidence's order decides


def flags_verdict(r: StaticReply, flags: list[str], arch: str = "sm_120") -> dict:
    parsed = {"attention_backend": None, "sampling_backend": None, "disable_cuda_graph": False, "tp_size": 1}
    for name, value in zip(flags[::2], flags[1::2]):
        parsed[name.lstrip("-").replace("-", "_")] = value
    r.flags = Outcome(True, parsed)
    report = Report("verify", "img", archs=[arch])
    check_flags(report, r, ServerCommand(["--model-path", "m", *flags], "the given command"), {arch: rows_of(r, arch)})
    return asdict(report.checks[0])


def test_backends_left_to_sglang_are_judged_as_sglang_picks_them_on_the_architecture():
    picks = {"sm_120": {"attention_backend": "flashinfer", "sampling_backend": "flashinfer"}}
    broken = flags_verdict(blackwell_reply(jit_ok=False, defaults=picks), [])
    assert broken["status"] == "fail" and "attention flashinfer (SGLang picks it: no flag names one): " in broken["detail"]
    assert "cxx missing" in broken["detail"]
    fine = flags_verdict(blackwell_reply(defaults=picks), [])
    assert fine["status"] == "pass" and "SGLang's own choice on sm_120: attention flashinfer, sampling flashinfer" in fine["detail"]
    named = flags_verdict(blackwell_reply(jit_ok=False, defaults=picks), ["--attention-backend", "triton", "--sampling-backend", "pytorch"])
    assert named["status"] == "pass" and "SGLang's own choice" not in named["detail"]
    unknown = flags_verdict(blackwell_reply(defaults={"sm_120": {"error": "no GPU"}}), [])
    assert unknown["status"] == "warn" and "not known: no GPU" in unknown["detail"]


# -- engine: an image made without sglbuild ---------------------------------------------------

@pytest.fixture(scope="module")
def foreign(tmp_path_factory, docker_client, engine, uv_wheel):
    """A hand-made image on a test base: a venv with a stand-in SGLang, its flags in ENTRYPOINT/CMD, no labels."""
    tmp = tmp_path_factory.mktemp("foreign")
    project, index = small_project(tmp, uv_wheel, None)  # for its Debian base image, the test base
    from builder.assemble.base import ensure_base
    from builder.assemble.plan import base_ref
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
    flags = {c["id"]: c for c in report["checks"]}["serve-flags"]
    # The given command, not CMD's field-report flags (which SGLang 0.5.9 rejects), is what is judged: its
    # torch_native attention, on an image with no torch at all.
    assert flags["status"] == "fail" and "and the given arguments select what cannot run on sm_120" in flags["detail"]
    assert "--disable-flashinfer" not in flags["detail"]
    assert "attention torch_native: no torch/lib/libtorch_cuda.so in the image" in flags["detail"], flags
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


def test_a_command_that_names_no_backend_is_judged_as_the_images_sglang_picks(real, tmp_path):
    """A new user's command on the default image, no backend named: SGLang 0.5.9 picks FlashInfer on sm_120 (its own
    ServerArgs code, asked by the probe), whose JIT cannot compile there: the flags fail."""
    code, report, _ = verify_json(real, tmp_path, "--arch", "sm_90,sm_100,sm_120", "--",
                                  "python3", "-m", "sglang.launch_server", "--model-path", "M")
    picks = {arch: (d["attention_backend"], d["sampling_backend"]) for arch, d in report["defaults"].items()}
    assert picks == {"sm_90": ("fa3", "flashinfer"), "sm_100": ("trtllm_mha", "flashinfer"), "sm_120": ("flashinfer", "flashinfer")}
    flags = {c["arch"]: c for c in report["checks"] if c["id"] == "serve-flags"}
    assert code == 1 and flags["sm_120"]["status"] == "fail"
    assert "attention flashinfer (SGLang picks it: no flag names one)" in flags["sm_120"]["detail"]


@pytest.mark.full  # a probe of the real image more; make test holds the image's own (compat) flags passing (README table)
def test_naming_backends_that_run_passes_on_the_real_image(real, tmp_path):
    code, report, _ = verify_json(real, tmp_path, "--arch", "sm_120", "--", "python3", "-m", "sglang.launch_server",
                                  "--model-path", "M", "--attention-backend", "triton", "--sampling-backend", "pytorch")
    assert next(c for c in report["checks"] if c["id"] == "serve-flags")["status"] == "pass"


def test_the_documented_table_is_the_real_images_evidence(real):
    generated = run_cli("verify", real, "--format", "markdown", cwd=ROOT).stdout
    readme = (ROOT / "docs" / "verify.md").read_text()
    section = re.search(r"<!-- features:begin -->\n(.*?)<!-- features:end -->", readme, re.S)
    assert section and section.group(1) == generated, "regenerate it: make features-table"


def test_a_derived_target_is_built_with_what_its_own_evidence_proves(tmp_path_factory, docker_client, uv_wheel, sm120_so, engine):
    """[serve] preset = "derived": the final stage waits for the evidence of the stage before it, then carries its flags."""
    server = '\n[[targets.derivedtest.stage]]\nname = "server"\nrequires = ["sglang==0.5.9"]\n\n[targets.derivedtest.serve]\npreset = "derived"\n'
    project, index = small_project(tmp_path_factory.mktemp("derived"), uv_wheel, sm120_so, name="derivedtest", extra=server)
    try:
        before = json.loads(run_cli("plan", "--json", cwd=project).stdout)[0]
        assert before["stages"][-1]["key"] is None and "derived flags" in before["stages"][-1]["next_build"]
        r = run_cli("build", "--json", cwd=project)
        assert r.returncode == 0, r.stderr
        # The gate's verify reuses the JIT compile of the evidence step: the final layer holds only sglbuild's files.
        assert "compiled in the build's evidence stage sha256:" in triton_evidence(json.loads(r.stdout)["verify"])
        flags = json.loads(docker_client.images.get(f"{TEST_IMAGE}:derivedtest").labels["io.sglbuild.serve-flags"])
        # The stand-in SGLang has no Triton and no FlashInfer beside it, only torch's CUDA library (with sm_120 SASS):
        # torch_native attention and sampling are proven, and with them CUDA graphs and the radix cache; verify reads
        # the same evidence and agrees.
        assert flags[4:] == ["--disable-custom-all-reduce", "--attention-backend", "torch_native", "--sampling-backend", "pytorch"]
        code, report, _ = verify_json(f"{TEST_IMAGE}:derivedtest", project)
        assert code == 0 and report["derived"]["sm_120"] == flags[4:]
        assert "compiled in the build's evidence stage sha256:" in triton_evidence(report)  # the gate's answer, said so
        code, fresh, _ = verify_json(f"{TEST_IMAGE}:derivedtest", project, "--fresh")  # its own compile: the same verdicts
        assert code == 0 and fresh["derived"] == report["derived"] and "compiled in" not in triton_evidence(fresh)
        assert triton_evidence(fresh) == triton_evidence(report).split(" [compiled in")[0]
        # The conditions of that reuse, each refused on its own: another image below, another environment.
        profile = load_profile(project / "sglbuild.toml")
        target = profile.target(None)
        plan = make_plan(target, read_lock(profile, target), "test", derived=tuple(flags), builder=engine.builder)
        final, below = f"{TEST_IMAGE}:derivedtest", {s.name: s.tag for s in plan.stages}
        assert evidence_jit(engine, plan, final, below["server"])["sm_120"].compiled_in == engine.images.get(below["server"]).id
        assert evidence_jit(engine, plan, final, below["app"]) is None
        assert evidence_jit(engine, replace(plan, target=replace(target, env=(("TRITON_PTXAS_PATH", "/x"),))), final, below["server"]) is None
        after = json.loads(run_cli("plan", "--json", cwd=project).stdout)[0]
        assert after["stages"][-1]["key"] and after["stages"][-1]["next_build"] == "reuse"  # the evidence is remembered
        again = json.loads(run_cli("build", "--json", cwd=project).stdout)
        assert {s["status"] for s in again["stages"]} == {"reused"}
    finally:
        index.stop()


def triton_evidence(report: dict) -> str:
    return next(f["evidence"] for f in report["features"]["sm_120"] if f["name"] == "attention triton")


def test_a_final_stage_with_post_install_commands_compiles_again(tmp_path_factory, docker_client, uv_wheel, sm120_so):
    """The evidence's JIT compile is reused only when the final layer holds sglbuild's own files: a post_install command
    may change what compiles (here it plants a Triton that cannot import), so the gate's verify probes the final image."""
    server = '\n[[targets.posttest.stage]]\nname = "server"\nrequires = ["sglang==0.5.9"]\n\n[targets.posttest.serve]\npreset = "derived"\n'
    project, index = small_project(tmp_path_factory.mktemp("post"), uv_wheel, sm120_so, name="posttest", extra=server, steps=())
    try:
        site = "/opt/venv/lib/python3.11/site-packages/triton"
        profile = project / "sglbuild.toml"
        profile.write_text(profile.read_text().replace("\nsmoke = ", f'\npost_install = ["mkdir {site} && echo broken = 1 > {site}/__init__.py"]\nsmoke = ', 1))
        for args in (("lock",), ("fetch",)):
            assert run_cli(*args, cwd=project).returncode == 0
        r = run_cli("build", "--json", cwd=project)
        assert r.returncode == 0, r.stderr
        evidence = triton_evidence(json.loads(r.stdout)["verify"])  # the gate's own verify
        assert evidence == "ModuleNotFoundError: No module named 'triton.language'", evidence
    finally:
        index.stop()


def test_the_probes_answer_is_kept_by_what_a_process_in_the_image_sees():
    """Labels (a new revision) make another image ID, not another answer; a layer, a variable, the user, the working
    directory or the platform does."""
    from builder.engine.records import ImageRecord

    base = ImageRecord(id="sha256:" + "1" * 64, labels={"org.opencontainers.image.revision": "a"},
                       config=ImageConfig(env=("PATH=/opt/venv/bin:/usr/bin",)), layers=("sha256:aa", "sha256:bb"))
    relabelled = replace(base, id="sha256:" + "2" * 64, labels={"org.opencontainers.image.revision": "b"}, tags=("x:y",))
    assert relabelled.content_key == base.content_key
    others = [replace(base, layers=("sha256:aa", "sha256:bc")), replace(base, layers=("sha256:aa",)),
              replace(base, config=replace(base.config, env=("PATH=/usr/bin",))), replace(base, config=replace(base.config, user="1000")),
              replace(base, config=replace(base.config, working_dir="/srv")), replace(base, architecture="arm64")]
    assert len({o.content_key for o in others} | {base.content_key}) == len(others) + 1
