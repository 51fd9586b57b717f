"""FlashInfer's modules ahead of time: the declaration, its stage and label in the plan, and verify's verdict per
architecture (pure logic on the repository's profile and lock and on canned probe replies). The image itself: in
tests/test_aot_image.py, on the real target's image."""

from __future__ import annotations

import dataclasses
import json

import pytest

from builder.assemble.plan import make_plan
from builder.check.aot import aot_check, aot_feature
from builder.contracts import LABEL_FLASHINFER_AOT, PROBE_VERSION, STAGE_AOT, Outcome, Runtime, StaticReply
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


def test_the_declared_platform_gets_a_stage_and_a_label_and_the_others_neither(blackwell):
    target, locks = blackwell
    amd64, arm64 = (make_plan(target, locks[p], "r") for p in ("linux/amd64", "linux/arm64"))
    aot = [s for s in amd64.stages if s.spec.kind == STAGE_AOT]
    assert [s.name for s in amd64.stages][-2:] == ["toolchain", STAGE_AOT] and len(aot) == 1
    assert aot[0].spec.archs == ("sm_100", "sm_120") and "sm_100,sm_120 /tmp/sglbuild-aot" in aot[0].dockerfile
    assert json.loads(amd64.labels[LABEL_FLASHINFER_AOT]) == json.loads(target.flashinfer_aot.to_json())
    assert STAGE_AOT not in [s.name for s in arm64.stages] and LABEL_FLASHINFER_AOT not in arm64.labels
    # The in-image code is served and checked by its sha256: the stage's text names it, so its key follows the code.
    assert aot[0].spec.script.sha256 in aot[0].dockerfile and aot[0].spec.script in amd64.served


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
