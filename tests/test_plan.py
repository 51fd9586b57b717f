"""The plan: stage keys depend on what a stage installs and its parent, nothing else (pure logic)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from builder.errors import ProfileError
from builder.assemble.plan import make_plan
from builder.inputs.profile import load_profile
from support import ROOT, fixture_lock, run_cli, small_profile

TWIN = """
[targets.twin]
description = "another name, tag, source and description; the same stages"
image = "sglbuild-test/other"
tag = "twin"
gpu_arch = "sm_120"
source = "https://example.invalid/elsewhere"

[targets.twin.base]
suite = "bookworm"
packages = ["python3", "python3-venv", "libnuma1"]
source_date_epoch = 1758153600

[targets.twin.python]
index = "http://x/simple"
tools = ["uv==0.13.9"]
compile_bytecode = true

[[targets.twin.stage]]
name = "torch"
requires = ["sgltest-torch==2.9.1"]

[[targets.twin.stage]]
name = "kernel"
requires = ["sgltest-kernel==0.3.21"]

[[targets.twin.stage]]
name = "app"
requires = ["sgltest-app==1.0"]
"""


@pytest.fixture
def profile(tmp_path):
    (tmp_path / "sglbuild.toml").write_text(small_profile("http://x/simple", smoke=[]) + TWIN)
    return load_profile(tmp_path / "sglbuild.toml")


def twin_lock(profile, target):
    """The same pins under the other target's name (what `sglbuild lock twin` resolves to)."""
    return dataclasses.replace(fixture_lock(profile.target(None)), target=target.name, inputs=target.inputs_digest())


def test_two_targets_with_the_same_stages_share_every_stage_image(profile):
    a, b = profile.target("smalltest"), profile.target("twin")
    pa, pb = make_plan(a, fixture_lock(a), "rev-1"), make_plan(b, twin_lock(profile, b), "rev-2")
    assert pa.base == pb.base
    shared = [x.name for x, y in zip(pa.stages, pb.stages) if (x.key, x.tag) == (y.key, y.tag)]
    assert shared == ["system", "torch", "kernel", "app"]
    # The final stage installs the target's own lock (which names its target) and SBOM: those are
    # different files, so it is a different stage. Name, tag, revision and source are labels only.
    assert pa.final.key != pb.final.key
    assert pa.labels["io.sglbuild.target"] == "smalltest" and pb.labels["io.sglbuild.target"] == "twin"


def test_revision_description_and_source_change_labels_not_keys(profile):
    t = profile.target(None)
    lock = fixture_lock(t)
    before = make_plan(t, lock, "rev-1")
    after = make_plan(dataclasses.replace(t, description="new words", source="https://else"), lock, "rev-2")
    assert [s.key for s in before.stages] == [s.key for s in after.stages]
    assert before.labels != after.labels
    for s in before.stages:
        assert "rev-1" not in s.dockerfile and "smalltest" not in s.dockerfile
    # A new human tag changes the one file that names the image, the SBOM in the final stage: that stage only.
    retagged = make_plan(dataclasses.replace(t, tag="renamed"), lock, "rev-1")
    assert [s.name for s, r in zip(before.stages, retagged.stages) if s.key != r.key] == ["final"]


def test_tools_is_not_a_stage_name(tmp_path):
    text = small_profile("http://x/simple").replace('name = "kernel"', 'name = "tools"')
    (tmp_path / "sglbuild.toml").write_text(text)
    with pytest.raises(ProfileError, match=r"stage name 'tools' is sglbuild's own \(base, final, flashinfer-aot, flashinfer-aot-cross, system, tools are reserved\)"):
        load_profile(tmp_path / "sglbuild.toml")


def test_plan_command_without_an_engine_still_shows_keys(profile, tmp_path):
    from builder.inputs.locking import write_lock

    for name in ("smalltest", "twin"):
        t = profile.target(name)
        write_lock(profile, t, fixture_lock(t) if name == "smalltest" else twin_lock(profile, t))
    r = run_cli("plan", "--all", cwd=tmp_path, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert r.returncode == 0, r.stderr
    assert "(shared with twin)" in r.stdout and "(shared with smalltest)" in r.stdout
    assert "no engine answers" in r.stdout
    r = run_cli("plan", "--all", "--json", cwd=tmp_path, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    plans = {p["target"]: p for p in json.loads(r.stdout)}
    keys = {name: [s["key"] for s in p["stages"]] for name, p in plans.items()}
    assert keys["smalltest"][:4] == keys["twin"][:4] and keys["smalltest"][4] != keys["twin"][4]
    assert {s["next_build"] for p in plans.values() for s in p["stages"]} == {"unknown"}


# The default image's stage keys: a stage key is the sha256 of the Dockerfile text it builds, so equal keys mean
# the same steps over the same inputs, which give the same layers (9082be2e, d31dc78b, c1f69782, 92b1f2c3, 6f587faa,
# 7fd1f8ab). A change to the template, the helpers or the plan that would change the default image changes one.
DEFAULT_KEYS = {"base": "fb3504777aa11f54", "system": "6cf7c60b862c9d6c", "torch": "187fb744f41ac55d",
                "kernel": "94fc2f51272f6c4c", "sglang": "0f90b8966186abf5", "final": "1b25bd245c87c8eb"}
DEFAULT_LAYERS = ["9082be2e", "d31dc78b", "0b8d2cf4", "691835c6", "ea74ca4f", "5a3133b0"]


def test_the_default_images_stage_keys_stay():
    from builder.inputs.lockfile import check_lock

    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target(None)
    plan = make_plan(target, check_lock(profile, target), "any revision")
    keys = {"base": plan.base.rpartition(":")[2], **{s.name: s.key[:16] for s in plan.stages}}
    assert keys == DEFAULT_KEYS


def test_the_default_image_has_its_six_layers(docker_client):
    """On the image `make image` built (CI builds it before the tests): its layers, by diff ID."""
    try:
        image = docker_client.images.get("sglang:blackwell-final-v2")
    except Exception:  # noqa: BLE001
        pytest.skip("sglang:blackwell-final-v2 is not built here: run 'make image'")
    assert [d.split(":")[1][:8] for d in image.attrs["RootFS"]["Layers"]] == DEFAULT_LAYERS


# -- one plan per target and platform, carried through -----------------------------------------------------

def test_plan_shows_every_platform_build_would_build(tmp_path):
    """The repository's blackwell target (its lock holds both platforms): plan says what build builds, --platform one."""
    both = json.loads(run_cli("plan", "blackwell", "--json", cwd=ROOT).stdout)
    assert [(p["platform"], p["archs"]) for p in both] == [("linux/amd64", ["sm_100", "sm_120"]), ("linux/arm64", ["sm_100", "sm_121"])]
    one = json.loads(run_cli("plan", "blackwell", "--json", "--platform", "linux/arm64", cwd=ROOT).stdout)
    assert [p["platform"] for p in one] == ["linux/arm64"] and one[0]["stages"] == both[1]["stages"]
    text = run_cli("plan", "blackwell", cwd=ROOT).stdout
    assert "(classic builder, linux/amd64)" in text or "(buildkit builder, linux/amd64)" in text
    assert "linux/arm64)" in text
    r = run_cli("plan", "blackwell", "--platform", "linux/riscv64", cwd=ROOT)
    assert r.returncode == 2 and "has no platform linux/riscv64" in r.stderr


def test_a_targets_plans_are_made_once_per_platform(monkeypatch):
    """pipeline.plans makes each platform's plan once, and asks git for the revision once; a derived plan completed
    with its flags is the plan made with them from the start (its lower stages untouched)."""
    from builder import pipeline
    from builder.assemble import plan as plan_module
    from builder.inputs.lockfile import read_lock

    profile = load_profile(ROOT / "sglbuild.toml")
    target = profile.target("blackwell")
    calls = []
    real = plan_module.make_plan
    monkeypatch.setattr(pipeline, "make_plan", lambda *a, **k: calls.append(a[0].name) or real(*a, **k))
    made = pipeline.plans(profile, target, "classic")
    assert sorted(made) == ["linux/amd64", "linux/arm64"] and calls == ["blackwell", "blackwell"]
    lock = read_lock(profile, target, "linux/arm64")
    flags = ("--attention-backend", "flashinfer")
    completed = real(target, lock, "r").with_derived(flags)
    whole = real(target, lock, "r", derived=flags)
    assert [(s.name, s.key, s.dockerfile) for s in completed.stages] == [(s.name, s.key, s.dockerfile) for s in whole.stages]
    assert (completed.labels, completed.serve_flags, completed.served) == (whole.labels, whole.serve_flags, whole.served)
