"""Lock files and rendering: pure logic on small fixtures."""

from __future__ import annotations

import dataclasses

import pytest

from builder.build import plan
from builder.errors import InputError, LockError
from builder.flags import server_flags
from builder.lock import Lock, Platform, Wheel, check_lock, parse_lock, read_lock, write_lock
from builder.profile import Serve, load_profile
from builder.render import render, stage_specs
from conftest import small_profile

H = "ab" * 32


def fixture_lock(target, app_version="1.0") -> Lock:
    def w(name, version, stage, requires=()):
        return Wheel(name, version, f"{name.replace('-', '_')}-{version}-py3-none-any.whl",
                     (name + version).encode().hex()[:64].ljust(64, "0"), f"http://x/{name}", stage, requires=requires)
    return Lock(
        target=target.name, inputs=target.inputs_digest(), platform=Platform("3.11.2", "2.36"),
        debian={"python3": "3.11.2-1+b1", "libc6": "2.36-9+deb12u14"},
        wheels=[w("sgltest-torch", "2.9.1", "torch", ("sgltest-dep",)), w("sgltest-dep", "1.2", "torch"),
                w("sgltest-kernel", "0.3.21", "kernel"), w("sgltest-app", app_version, "app"), w("uv", "0.13.9", "tools")],
    )


@pytest.fixture
def profile(tmp_path):
    p = tmp_path / "sglbuild.toml"
    p.write_text(small_profile("http://x/simple"))
    return load_profile(p)


def test_lock_round_trip_is_byte_stable(profile):
    t = profile.target(None)
    lock = fixture_lock(t)
    path = write_lock(profile, t, lock)
    again = read_lock(profile, t)
    assert again.to_json() == lock.to_json() == path.read_text()
    assert again.digest == lock.digest


def test_lock_check_detects_a_changed_profile(profile, tmp_path):
    t = profile.target(None)
    write_lock(profile, t, fixture_lock(t))
    assert check_lock(profile, t).target == "smalltest"
    (tmp_path / "sglbuild.toml").write_text(small_profile("http://x/simple", app_version="1.1"))
    changed = load_profile(tmp_path / "sglbuild.toml")
    with pytest.raises(LockError, match=r"smalltest.lock.json: out of date.*run 'sglbuild lock smalltest'"):
        check_lock(changed, changed.target(None))


def test_missing_and_malformed_lock(profile):
    t = profile.target(None)
    with pytest.raises(LockError, match=r"no lock for target 'smalltest' \(run 'sglbuild lock smalltest'\)"):
        read_lock(profile, t)
    with pytest.raises(LockError, match=r"lock.json:4: not valid JSON"):
        parse_lock('{\n "version": 1,\n "target": \n}', "lock.json")
    with pytest.raises(LockError, match=r"malformed lock \(KeyError"):
        parse_lock('{"version": 1}', "lock.json")


def test_render_pins_every_wheel_by_hash_and_never_copies_wheels(profile):
    t = profile.target(None)
    lock = fixture_lock(t)
    text = render(t, lock, stage_specs(t, lock, "sglbuild/base:x"), "abc123")
    for w in lock.wheels:
        if w.stage == "tools":
            assert f"{w.filename}\" {w.sha256} /tmp/sglbuild-uv.whl;" in text  # uv: fetched, sha256-checked
        else:
            assert f"'{w.name}=={w.version} --hash=sha256:{w.sha256}'" in text
    assert not [ln for ln in text.splitlines() if ln.startswith(("COPY", "ADD"))]
    assert "/usr/share/sglbuild/lock.json" in text and "/usr/share/sglbuild/sbom.cdx.json" in text
    assert "FROM sglbuild/base:x AS system" in text and "FROM app AS final" in text
    assert 'org.opencontainers.image.revision="abc123"' in text
    assert "org.opencontainers.image.created=\"2025-09-18T00:00:00Z\"" in text


def test_plain_render_drops_only_the_reproducibility_steps(profile):
    t = profile.target(None)
    lock = fixture_lock(t)
    specs = stage_specs(t, lock, "sglbuild/base:x")
    ours, plain = render(t, lock, specs, "r"), render(t, lock, specs, "r", reproducible=False)
    wheel_stages = [s for s in specs if s.kind == "wheels"]
    assert ours.count('touch -h -d "@$SOURCE_DATE_EPOCH"') == len(specs)
    assert ours.count("--reinstall -r /tmp/sglbuild-again.txt") == len(wheel_stages)  # the clashing-files fix-up
    assert "SOURCE_DATE_EPOCH" not in plain and "--reinstall" not in plain
    pins = [ln for ln in ours.splitlines() if "--hash=sha256:" in ln]
    assert pins and pins == [ln for ln in plain.splitlines() if "--hash=sha256:" in ln]
    assert plan(t, lock, "b", "r")[0].key != plan(t, lock, "b", "r", reproducible=False)[0].key


def test_template_with_an_undefined_variable_fails_loudly(profile, tmp_path):
    t = profile.target(None)
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "Dockerfile.j2").write_text("FROM {{ base_imgae }}\n")
    with pytest.raises(InputError, match=r"'base_imgae' is undefined"):
        render(t, fixture_lock(t), [], "r", template_dir=tmp_path / "tpl")


def test_changing_one_pin_changes_only_the_keys_after_it(profile):
    t = profile.target(None)
    a = plan(t, fixture_lock(t, "1.0"), "sglbuild/base:x", "r")
    b = plan(t, fixture_lock(t, "1.1"), "sglbuild/base:x", "r")
    same = [x.spec.name for x, y in zip(a, b) if x.key == y.key]
    assert same == ["system", "torch", "kernel"]
    assert [x.spec.name for x in a] == ["system", "torch", "kernel", "app", "final"]


def test_serving_flags_follow_the_locked_sglang():
    s = Serve(cuda_graph=False, custom_all_reduce=False, flashinfer=False, radix_cache=False, attention_backend="torch_native")
    new = server_flags(s, "0.5.9")
    assert "--disable-flashinfer" not in new  # 0.5.9 rejects it
    assert new[4:] == ["--disable-cuda-graph", "--disable-custom-all-reduce", "--disable-radix-cache",
                       "--attention-backend", "torch_native", "--sampling-backend", "pytorch"]
    old = server_flags(dataclasses.replace(s, attention_backend=None), "0.2.15")
    assert "--disable-flashinfer" in old and "--attention-backend" not in old
