"""Profile parsing: valid targets, and bad input that names file, key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ProfileError
from builder.inputs.profile import load_profile
from support import ROOT, small_profile


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "sglbuild.toml"
    p.write_text(text)
    return p


def test_repository_profile_declares_the_field_report_image():
    profile = load_profile(ROOT / "sglbuild.toml")
    t = profile.target(None)
    assert t.human_tag == "sglang:blackwell-final-v2"
    assert t.gpu_arch == "sm_120"
    assert [s.name for s in t.stages] == ["torch", "kernel", "sglang"]
    assert t.stages[0].requires[0].requirement == "torch==2.9.1"
    assert "libnuma1" in t.base.packages and t.base.source_date_epoch > 0
    assert t.serve and not t.serve.flashinfer and t.serve.attention_backend == "torch_native"
    nightly = profile.target("blackwell-nightly")
    assert nightly.stages[0].requires[0].index.startswith("https://download.pytorch.org/")
    assert nightly.stages[1].requires[0].wheel.endswith("+cu128-cp39-abi3-manylinux2014_x86_64.whl")


def test_small_profile_parses(tmp_path):
    t = load_profile(write(tmp_path, small_profile("http://127.0.0.1:1/simple"))).target("smalltest")
    assert t.index == "http://127.0.0.1:1/simple"
    assert t.tools[0].name == "uv"


def test_inputs_digest_ignores_serving_and_tags_but_not_pins(tmp_path):
    a = load_profile(write(tmp_path, small_profile("http://x/simple"))).target(None)
    b = load_profile(write(tmp_path, small_profile("http://x/simple", smoke=["true"]))).target(None)
    c = load_profile(write(tmp_path, small_profile("http://x/simple", app_version="1.1"))).target(None)
    assert a.inputs_digest() == b.inputs_digest() != c.inputs_digest()


def test_missing_profile(tmp_path):
    with pytest.raises(ProfileError, match=r"nope.toml: profile not found"):
        load_profile(tmp_path / "nope.toml")


def test_malformed_toml_names_the_line(tmp_path):
    p = write(tmp_path, 'default_target = "a"\n[targets.a\nimage = 1\n')
    with pytest.raises(ProfileError, match=r"sglbuild.toml: not valid TOML: .*line 2"):
        load_profile(p)


def test_unknown_key_names_key_and_line(tmp_path):
    text = small_profile("http://x/simple").replace('gpu_arch = "sm_120"', 'gpu_arch = "sm_120"\ngpu_archs = "sm_90"')
    p = write(tmp_path, text)
    lineno = text.splitlines().index('gpu_archs = "sm_90"') + 1
    with pytest.raises(ProfileError, match=rf"sglbuild.toml:{lineno}: targets.smalltest.gpu_archs: unknown key"):
        load_profile(p)


def test_bad_version_spec_is_rejected_by_packaging(tmp_path):
    p = write(tmp_path, small_profile("http://x/simple").replace('"sgltest-torch==2.9.1"', '"sgltest-torch=>2.9"'))
    with pytest.raises(ProfileError, match=r"targets.smalltest.stage.requires: 'sgltest-torch=>2.9' is not a valid requirement"):
        load_profile(p)


def test_unknown_target(tmp_path):
    profile = load_profile(write(tmp_path, small_profile("http://x/simple")))
    with pytest.raises(ProfileError, match=r"no target named 'nope' \(targets: smalltest\)"):
        profile.target("nope")


def test_prebuilt_wheel_needs_sha256(tmp_path):
    text = small_profile("http://x/simple").replace(
        '"sgltest-kernel==0.3.21"', '{ requirement = "sgltest-kernel==0.3.21", wheel = "k-0.3.21-py3-none-any.whl" }')
    with pytest.raises(ProfileError, match=r"a prebuilt wheel needs 'sha256'"):
        load_profile(write(tmp_path, text))


def test_registry_base_must_be_pinned_by_digest(tmp_path):
    text = small_profile("http://x/simple").replace('suite = "bookworm"', 'image = "debian:bookworm"\npython = "3.11"')
    with pytest.raises(ProfileError, match=r"targets.smalltest.base.image: 'debian:bookworm' must be pinned by digest"):
        load_profile(write(tmp_path, text))


def test_wrong_type_names_key(tmp_path):
    text = small_profile("http://x/simple").replace("source_date_epoch = 1758153600", 'source_date_epoch = "yesterday"')
    with pytest.raises(ProfileError, match=r"targets.smalltest.base.source_date_epoch: must be an int, not str"):
        load_profile(write(tmp_path, text))
