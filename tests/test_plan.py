"""The plan: stage keys depend on what a stage installs and its parent, nothing else (pure logic)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from builder.errors import ProfileError
from builder.plan import make_plan
from builder.profile import load_profile
from conftest import small_profile
from support import run_cli
from test_lock_render import fixture_lock

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
    with pytest.raises(ProfileError, match=r"stage name 'tools' is sglbuild's own \(base, final, system, tools are reserved\)"):
        load_profile(tmp_path / "sglbuild.toml")


def test_plan_command_without_an_engine_still_shows_keys(profile, tmp_path):
    from builder.lock import write_lock

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
