"""FlashInfer's modules ahead of time: the declaration, its stage and label in the plan, and verify's verdict per
architecture (pure logic on the repository's profile and lock and on canned probe replies). The image itself: in
tests/test_aot_image.py, on the real target's image."""

from __future__ import annotations

import dataclasses
import json

import pytest

from builder.assemble.plan import make_plan
from builder.check.aot import aot_check, aot_feature
from builder.contracts import LABEL_FLASHINFER_AOT, PROBE_VERSION, STAGE_AOT, STAGE_AOT_CROSS, Outcome, Runtime, StaticReply
from builder.errors import InputError, ProfileError
from builder.inputs.lockfile import read_locks
from builder.inputs.profile import FlashInferAot, load_profile
from builder.probe.flashinfer_aot import arch_list
from support import ROOT


@pytest.fixture(scope="module")
def blackwell():
    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target("blackwell")
    lockfile = read_locks(profile, target)
    return target, {p: lockfile.lock(p) for p in target.platform_names}


def test_the_build_platform_compiles_its_modules_in_its_own_stage(blackwell):
    target, locks = blackwell
    amd64 = make_plan(target, locks["linux/amd64"], "r")
    aot = [s for s in amd64.stages if s.spec.kind == STAGE_AOT]
    assert [s.name for s in amd64.stages][-2:] == ["toolchain", STAGE_AOT] and len(aot) == 1 and amd64.cross is None
    assert aot[0].spec.archs == ("sm_100", "sm_120") and "sm_100,sm_120 /tmp/sglbuild-aot;" in aot[0].dockerfile
    assert json.loads(amd64.labels[LABEL_FLASHINFER_AOT]) == json.loads(target.flashinfer_aot.to_json())
    # The in-image code is served and checked by its sha256: the stage's text names it, so its key follows the code.
    assert aot[0].spec.script.sha256 in aot[0].dockerfile and aot[0].spec.script in amd64.served
    # The cross compilers are the build platform's cross stage's: its own toolchain stage does not install them
    assert not any("aarch64" in d.name for s in amd64.stages for d in s.spec.debs)


def test_arm64s_modules_are_cross_compiled_over_amd64s_toolchain_and_only_unpacked_on_arm64(blackwell):
    target, locks = blackwell
    amd64, arm64 = (make_plan(target, locks[p], "r") for p in ("linux/amd64", "linux/arm64"))
    cross = arm64.cross.stages[-1]
    # the build platform's own stages, the same images its image is built from, then the cross stage over its toolchain
    assert [s.tag for s in arm64.cross.stages[:-1]] == [s.tag for s in amd64.stages if s.spec.kind in ("system", "wheels")]
    assert cross.name == STAGE_AOT_CROSS
    assert cross.spec.parent == [s for s in amd64.stages if s.name == "toolchain"][0].tag and arm64.cross.platform == "linux/amd64"
    assert cross.spec.archs == ("sm_100", "sm_121") and "--cross aarch64-linux-gnu" in cross.dockerfile
    assert {d.name for d in cross.spec.debs} >= {"g++-aarch64-linux-gnu", "libstdc++-12-dev-arm64-cross", "binutils-aarch64-linux-gnu"}
    assert all(d.architecture in ("amd64", "all") for d in cross.spec.debs)  # it runs on amd64: no compiler under emulation
    runtime = cross.spec.wheels[0]
    assert runtime.name == "nvidia-cuda-runtime" and "aarch64" in runtime.filename and runtime in arm64.cross.lock.files
    # arm64's flashinfer-aot stage names the cross stage's tag (so its key follows that stage's inputs) and compiles nothing
    aot = [s for s in arm64.stages if s.spec.kind == STAGE_AOT][0]
    assert aot.spec.cross_from == cross.tag and cross.key[:16] in aot.dockerfile and aot.spec.script is None
    assert "nvcc" not in aot.dockerfile and "flashinfer_aot.py" not in aot.dockerfile and "$SGLBUILD_AOT_SHA256" in aot.dockerfile
    assert json.loads(arm64.labels[LABEL_FLASHINFER_AOT]) == json.loads(target.flashinfer_aot.to_json())


def test_a_platform_left_out_of_the_declaration_gets_neither_stage_nor_label(blackwell):
    target, locks = blackwell
    amd64_only = dataclasses.replace(target, flashinfer_aot=dataclasses.replace(target.flashinfer_aot, platforms=("linux/amd64",)))
    arm64 = make_plan(amd64_only, locks["linux/arm64"], "r")
    assert STAGE_AOT not in [s.name for s in arm64.stages] and LABEL_FLASHINFER_AOT not in arm64.labels and arm64.cross is None
    assert amd64_only.aot_cross_compilers() == () and "aot_cross" not in amd64_only.resolution_inputs()
    assert target.aot_cross_compilers() == ("g++-aarch64-linux-gnu",) and target.resolution_inputs()["aot_cross"]


def test_a_lock_without_the_cross_compiler_or_the_runtime_is_one_error(blackwell):
    target, locks = blackwell
    arm64 = locks["linux/arm64"]
    no_runtime = dataclasses.replace(arm64, wheels=[w for w in arm64.wheels if w.name != "nvidia-cuda-runtime"])
    with pytest.raises(InputError, match="has no nvidia-cuda-runtime there"):
        make_plan(target, no_runtime, "r")
    text = json.loads(arm64.file_text)
    text["platforms"]["linux/amd64"]["debs"] = [d for d in text["platforms"]["linux/amd64"]["debs"] if d["stage"] != STAGE_AOT_CROSS]
    with pytest.raises(InputError, match="has no cross compiler for linux/arm64"):
        make_plan(target, dataclasses.replace(arm64, file_text=json.dumps(text)), "r")


def test_the_cross_stages_key_follows_the_shapes_and_the_architectures(blackwell):
    target, locks = blackwell
    key = lambda t: make_plan(t, locks["linux/arm64"], "r").cross.stages[-1].key  # noqa: E731
    wider = dataclasses.replace(target, flashinfer_aot=dataclasses.replace(target.flashinfer_aot, head_dims=(64, 128)))
    other = dataclasses.replace(target, platforms=(("linux/amd64", ("sm_100", "sm_120")), ("linux/arm64", ("sm_121",))))
    assert len({key(target), key(wider), key(other)}) == 3


def test_a_shape_changes_only_the_aot_stages_key(blackwell):
    target, locks = blackwell
    before = make_plan(target, locks["linux/amd64"], "r")
    wider = dataclasses.replace(target, flashinfer_aot=dataclasses.replace(target.flashinfer_aot, head_dims=(64, 128, 256)))
    after = make_plan(wider, locks["linux/amd64"], "r")
    keys = lambda plan: {s.name: s.key for s in plan.stages}  # noqa: E731
    changed = {n for n in keys(before) if keys(before)[n] != keys(after)[n]}
    assert changed == {STAGE_AOT}


def test_a_completed_derived_plan_keeps_serving_the_aot_code(blackwell):
    target, locks = blackwell
    plan = make_plan(target, locks["linux/amd64"], "r")
    done = plan.with_derived(("--attention-backend", "flashinfer"))
    assert done.stages[-2].name == STAGE_AOT and done.stages[-2].spec.script in done.served
    assert done.served[-1].url_path.endswith(".whl")  # the helpers' wheel stays last


def test_a_declaration_without_flashinfer_in_the_lock_is_one_error(blackwell):
    target, locks = blackwell
    lock = locks["linux/amd64"]
    without = dataclasses.replace(lock, wheels=tuple(w for w in lock.wheels if w.name != "flashinfer-python"))
    with pytest.raises(InputError, match="declares \\[flashinfer_aot\\] but its lock has no flashinfer-python"):
        make_plan(target, without, "r")
    no_nvcc = dataclasses.replace(target, stages=tuple(dataclasses.replace(s, cuda_home=None) for s in target.stages))
    with pytest.raises(InputError, match="declares \\[flashinfer_aot\\] but no stage sets cuda_home"):
        make_plan(no_nvcc, lock, "r")


BAD = [
    ('head_dims = [96]', "head_dims: must be a list of distinct values from 64, 128, 256"),
    ('modules = []', "modules: must be a list of distinct values from decode, prefill, page, sampling"),
    ('kv_dtypes = ["bf16", "bf16"]', "kv_dtypes: must be a list of distinct values"),
    ('dtype = "fp8_e4m3"', "dtype: 'fp8_e4m3': one of bf16, fp16"),
    ('platforms = ["linux/riscv64"]', "platforms: must be a list of distinct values from linux/amd64, linux/arm64"),
    ('head_dim = [128]', "head_dim: unknown key"),
    ('head_dims = [[128]]', "head_dims: must be a list of distinct values"),
    ('head_dims = [true]', "head_dims: must be a list of distinct values"),
]


def test_cross_compiling_needs_the_build_platform_among_the_targets(tmp_path):
    text = (ROOT / "sglbuild.toml").read_text()
    text = text.replace('platforms = { "linux/amd64" = ["sm_100", "sm_120"], "linux/arm64" = ["sm_100", "sm_121"] }',
                        'platforms = { "linux/arm64" = ["sm_100", "sm_121"] }')
    (tmp_path / "sglbuild.toml").write_text(text)
    with pytest.raises(ProfileError, match="FlashInfer's modules compile on linux/amd64, which this target does not build") as caught:
        load_profile(tmp_path / "sglbuild.toml")
    assert "targets.blackwell.flashinfer_aot.platforms" in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize("line,message", BAD, ids=[b[0].split()[0] for b in BAD])
def test_a_bad_declaration_is_one_line_naming_the_key(tmp_path, line, message):
    text = (ROOT / "sglbuild.toml").read_text()
    start = text.index("[targets.blackwell.flashinfer_aot]\n")
    end = text.index("\n[", start + 1)
    (tmp_path / "sglbuild.toml").write_text(text[:start] + f"[targets.blackwell.flashinfer_aot]\n{line}\n" + text[end:])
    with pytest.raises(ProfileError, match=message.replace("[", "\\[").replace("(", "\\(")) as caught:
        load_profile(tmp_path / "sglbuild.toml")
    assert "targets.blackwell.flashinfer_aot." in caught.value.message and "\n" not in caught.value.message


def test_the_defaults_and_the_arch_list_flashinfer_reads():
    assert FlashInferAot().modules == ("decode", "prefill", "page", "sampling")
    assert arch_list(["sm_100", "sm_120", "sm_121", "sm_90"]) == "10.0 12.0 12.1 9.0"


# -- verify's verdict on canned probe replies ----------------------------------------------------------------

def reply(aot: Outcome | None, dists: dict | None = None) -> StaticReply:
    return StaticReply(PROBE_VERSION, "3.11.2", "/opt/venv/bin/python", ["/sp"], dists or {"flashinfer-python": "0.7.2"},
                       Outcome(True), {}, None, None, None, [], {}, Runtime("/usr/bin/cc", True, True, "/usr/bin/ldd"), None,
                       flashinfer_aot=aot)


def module(kind: str, name: str, path: str | None, sass: list[str]) -> dict:
    return {"kind": kind, "name": name, "path": path, "sass": sass}


# FlashInfer compiles 10.0 as sm_100a (found so on the real image): that runs on sm_100, and only there.
ALL = [module("decode", "batch_decode_a", "/sp/flashinfer/data/aot/batch_decode_a/batch_decode_a.so", ["sm_100a", "sm_120"]),
       module("prefill", "batch_prefill_a", "/sp/flashinfer/data/aot/batch_prefill_a/batch_prefill_a.so", ["sm_100", "sm_120"]),
       module("page", "page", "/sp/flashinfer/data/aot/page/page.so", ["sm_100", "sm_120"])]


def test_every_declared_module_prebuilt_passes_and_the_table_says_prebuilt():
    data = reply(Outcome(True, ALL))
    check = aot_check(data, "sm_120")
    assert check.status == "pass" and "3 declared modules (1 decode, 1 prefill, 1 page) load prebuilt on sm_120" in check.detail
    row = aot_feature(data, "sm_120")
    assert row.available is True and row.evidence.startswith("prebuilt: ")
    assert StaticReply.from_dict(json.loads(json.dumps(data.to_dict()))) == data


@pytest.mark.parametrize("broken,why", [
    (module("prefill", "batch_prefill_a", None, []), "batch_prefill_a (no prebuilt file)"),
    (module("prefill", "batch_prefill_a", "/sp/x.so", ["sm_100"]), "batch_prefill_a (its file has SASS for sm_100, not sm_120)"),
], ids=["removed", "another-arch"])
def test_one_module_not_prebuilt_for_the_arch_fails_and_the_table_says_compiles_at_first_use(broken, why):
    data = reply(Outcome(True, [ALL[0], broken, ALL[2]]))
    check = aot_check(data, "sm_120")
    assert check.status == "fail" and check.detail == f"1 of 3 declared modules compile at first use on sm_120: {why}"
    assert check.hint and aot_feature(data, "sm_120").evidence.startswith("compiles at first use: ")
    assert aot_check(data, "sm_100").status == ("pass" if broken["path"] else "fail")


def test_arch_specific_sass_counts_on_its_own_capability_only():
    data = reply(Outcome(True, [module("decode", "d", "/sp/d.so", ["sm_100a", "sm_120"])]))
    assert aot_check(data, "sm_100").status == "pass" and aot_check(data, "sm_120").status == "pass"
    assert aot_check(data, "sm_103").status == "fail" and aot_check(data, "sm_121").status == "pass"  # sm_120 runs on sm_121


def test_flashinfer_that_cannot_answer_fails_and_an_image_that_declares_nothing_has_no_check():
    failed = aot_check(reply(Outcome(False, None, "ModuleNotFoundError: No module named 'flashinfer'")), "sm_120")
    assert failed.status == "fail" and "No module named 'flashinfer'" in failed.detail
    undeclared = reply(None)
    assert aot_check(undeclared, "sm_120") is None
    assert aot_feature(undeclared, "sm_120").evidence == "compiles at first use: the image declares no FlashInfer module ahead of time"
    assert aot_feature(reply(None, {"torch": "2.9.1"}), "sm_120") is None  # no FlashInfer: no row


def test_the_unpacking_stage_checks_the_served_modules_against_the_sha256_the_build_read(blackwell):
    from builder.assemble.plan import ServedFile
    from builder.assemble.stages import _stage_args
    from builder.engine.archives import tar_archive
    from builder.engine.images import tar_member_bytes

    target, locks = blackwell
    arm64 = make_plan(target, locks["linux/arm64"], "r")
    aot = next(s for s in arm64.stages if s.spec.kind == STAGE_AOT)
    # what `docker cp` gives for the cross stage's directory: its own name first, each module below
    copied = tar_archive({"sglbuild-aot/m/m.so": b"\x7fELF module", "sglbuild-aot/page/page.so": b"\x7fELF page"}, 0)
    assert tar_member_bytes(copied, below=True) == {"m/m.so": b"\x7fELF module", "page/page.so": b"\x7fELF page"}
    served = ServedFile(aot.spec.cross_file, tar_archive(tar_member_bytes(copied, below=True), target.base.source_date_epoch))
    plan = dataclasses.replace(arm64, served=(*arm64.served, served))
    assert _stage_args(plan, aot) == {"SGLBUILD_AOT_SHA256": served.sha256}
    assert all(_stage_args(plan, s) == {} for s in plan.stages if s is not aot)


def test_render_and_plan_show_the_cross_stage_under_arm64():
    from support import run_cli

    # no engine needed: the plan stands without one (DOCKER_HOST pointed nowhere)
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    r = run_cli("render", "blackwell", "--platform", "linux/arm64", cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert "FROM toolchain AS flashinfer-aot" in r.stdout and "AS flashinfer-aot-cross" in r.stdout and "--cross aarch64-linux-gnu" in r.stdout
    p = run_cli("plan", "blackwell", "--platform", "linux/arm64", "--json", cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    cross = json.loads(p.stdout)[0]["cross"]
    assert cross["platform"] == "linux/amd64" and cross["name"] == STAGE_AOT_CROSS and cross["parent"].startswith("sglbuild/stage:toolchain-")


def test_the_provenance_of_an_arm64_image_names_the_cross_stages_key(blackwell):
    from types import SimpleNamespace

    from builder.ship.attest import provenance

    target, locks = blackwell
    arm64 = make_plan(target, locks["linux/arm64"], "r")
    image = SimpleNamespace(labels={}, layers=[], platform="linux/arm64", id="sha256:" + "0" * 64)  # what provenance reads
    stages = provenance(SimpleNamespace(version="26.1.5", builder="classic"), image, arm64, None)["buildDefinition"]["internalParameters"]["stages"]
    assert stages[STAGE_AOT_CROSS] == arm64.cross.stages[-1].key and stages[STAGE_AOT] == arm64.stages[-1].key
