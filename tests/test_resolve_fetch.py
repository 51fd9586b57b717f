"""lock and fetch against a real PEP 503 index on loopback (and the real Debian mirror)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import ROOT, SGLBUILD, make_wheel, populate_index, run_cli, sha256, small_profile


@pytest.fixture
def project(tmp_path, index, uv_wheel):
    """A target with a registry base: these tests are about Python resolution and fetching."""
    populate_index(index, tmp_path, uv_wheel, None)
    d = tmp_path / "project"
    d.mkdir()
    (d / "sglbuild.toml").write_text(small_profile(index.url, registry_base=True))
    return d


def lock_json(project: Path, target: str = "smalltest") -> dict:
    return json.loads((project / "locks" / f"{target}.lock.json").read_text())


def test_lock_resolves_for_the_image_platform_and_splits_stages(project, index):
    (project / "sglbuild.toml").write_text(small_profile(index.url))  # the Debian base: resolved by mmdebstrap
    # The host's pip configuration must not leak in: point it somewhere that does not exist.
    r = run_cli("lock", cwd=project, env={"PIP_INDEX_URL": "http://127.0.0.1:9/none", "PIP_FIND_LINKS": "/nonexistent",
                                          "PIP_EXTRA_INDEX_URL": "http://127.0.0.1:9/x"})
    assert r.returncode == 0, r.stderr
    data = lock_json(project)
    stages = {w["name"]: w["stage"] for w in data["wheels"]}
    assert stages == {"sgltest-torch": "torch", "sgltest-dep": "torch", "sgltest-kernel": "kernel",
                      "sgltest-app": "app", "uv": "tools"}
    app = next(w for w in data["wheels"] if w["name"] == "sgltest-app")
    assert app["version"] == "1.0" and app["url"].startswith(index.url)
    assert app["sha256"] == sha256(index.root / "simple" / "sgltest-app" / app["filename"])
    assert "sgltest-windows-only" not in app["requires"]  # marker evaluated for linux, not the host
    assert data["platform"]["python"].startswith("3.11.") and data["platform"]["glibc"] == "2.36"
    assert "libc6" in data["debian"] and "python3.11" in data["debian"]
    first = (project / "locks" / "smalltest.lock.json").read_text()
    r = run_cli("lock", cwd=project)
    assert r.returncode == 0 and "up to date" in r.stdout
    r = run_cli("lock", "--update", cwd=project)  # resolved again: the same bytes
    assert "no pin moved" in r.stdout and (project / "locks" / "smalltest.lock.json").read_text() == first
    assert run_cli("lock", "--check", cwd=project).returncode == 0


def test_lock_check_fails_when_profile_and_lock_disagree(project, index):
    assert run_cli("lock", cwd=project).returncode == 0
    (project / "sglbuild.toml").write_text(small_profile(index.url, app_version="1.1", registry_base=True))
    r = run_cli("lock", "--check", cwd=project)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]  # one line, no traceback
    assert "out of date" in r.stderr and "run 'sglbuild lock smalltest'" in r.stderr


def test_nightly_from_a_named_index_and_a_prebuilt_wheel(tmp_path, index, uv_wheel):
    """The nightly path: torch from a second index by exact dev+local version, kernel from wheels/."""
    populate_index(index, tmp_path, uv_wheel, None)
    nightly_root = tmp_path / "nightly"
    from support import PackageIndex
    nightly = PackageIndex(nightly_root)
    try:
        nightly.add(make_wheel(tmp_path / "n", "sgltest-torch", "2.10.0.dev20250915+cu128", requires=["sgltest-dep"]))
        d = tmp_path / "project"
        (d / "wheels").mkdir(parents=True)
        kernel = make_wheel(d / "wheels", "sgltest-kernel", "0.3.21+cu128", tag="cp39-abi3-manylinux2014_x86_64")
        text = small_profile(index.url, registry_base=True).replace(
            '"sgltest-torch==2.9.1"', f'{{ requirement = "sgltest-torch>=2.10.0.dev0", index = "{nightly.url}", pre = true }}'
        ).replace(
            '"sgltest-kernel==0.3.21"', f'{{ requirement = "sgltest-kernel==0.3.21+cu128", wheel = "{kernel.name}", sha256 = "{sha256(kernel)}" }}'
        ).replace('"sgltest-app==1.0"', '"sgltest-dep"')
        (d / "sglbuild.toml").write_text(text)
        r = run_cli("lock", cwd=d)
        assert r.returncode == 0, r.stderr
        wheels = {w["name"]: w for w in lock_json(d)["wheels"]}
        assert wheels["sgltest-torch"]["version"] == "2.10.0.dev20250915+cu128"
        assert wheels["sgltest-torch"]["url"].startswith(nightly.url)
        assert wheels["sgltest-kernel"]["url"] is None and wheels["sgltest-kernel"]["sha256"] == sha256(kernel)
        # A newer nightly appears: a plain lock keeps the pin, --update moves it and says how.
        newer = nightly.add(make_wheel(tmp_path / "n", "sgltest-torch", "2.10.0.dev20250916+cu128", requires=["sgltest-dep"]))
        assert "up to date" in run_cli("lock", cwd=d).stdout
        r = run_cli("lock", "--update", cwd=d)
        assert r.returncode == 0, r.stderr
        old_sha = wheels["sgltest-torch"]["sha256"][:12]
        assert (f"~ sgltest-torch 2.10.0.dev20250915+cu128 -> 2.10.0.dev20250916+cu128 "
                f"(sha256 {old_sha} -> {sha256(newer)[:12]})") in r.stdout
        assert {w["name"]: w["version"] for w in lock_json(d)["wheels"]}["sgltest-torch"] == "2.10.0.dev20250916+cu128"
        # The prebuilt wheel changed on disk: resolution refuses it, and the lock stays as it was.
        before = (d / "locks" / "smalltest.lock.json").read_text()
        kernel.write_bytes(kernel.read_bytes() + b"\0")
        r = run_cli("lock", "--update", cwd=d)
        assert (d / "locks" / "smalltest.lock.json").read_text() == before
        assert r.returncode == 5 and "has sha256" in r.stderr and "the profile pins" in r.stderr
    finally:
        nightly.stop()


def test_unreachable_index_is_one_line_and_keeps_the_old_lock(project, index):
    assert run_cli("lock", cwd=project).returncode == 0
    before = (project / "locks" / "smalltest.lock.json").read_text()
    (project / "sglbuild.toml").write_text(small_profile("http://127.0.0.1:9/simple", registry_base=True))
    r = run_cli("lock", cwd=project)  # the profile changed, so this resolves
    assert r.returncode == 4
    assert "package index http://127.0.0.1:9/simple did not answer" in r.stderr
    assert "Traceback" not in r.stderr
    assert (project / "locks" / "smalltest.lock.json").read_text() == before


def test_fetch_verifies_removes_mismatches_and_resumes(project, index):
    assert run_cli("lock", cwd=project).returncode == 0
    wheels = project / "wheels"
    r = run_cli("fetch", cwd=project)
    assert r.returncode == 0, r.stderr
    data = lock_json(project)
    for w in data["wheels"]:
        assert sha256(wheels / w["filename"]) == w["sha256"]
    # A corrupted file in the wheelhouse is removed and fetched again.
    app = next(w for w in data["wheels"] if w["name"] == "sgltest-app")
    (wheels / app["filename"]).write_bytes(b"not a wheel")
    r = run_cli("fetch", cwd=project)
    assert r.returncode == 0 and "removed" in r.stderr
    assert sha256(wheels / app["filename"]) == app["sha256"]
    # The index serves different bytes: reported, removed, never used.
    (wheels / app["filename"]).unlink()
    index.tamper[app["filename"]] = b"evil bytes"
    r = run_cli("fetch", cwd=project)
    assert r.returncode == 5, r.stderr
    assert f"could not fetch {app['filename']}" in r.stderr and "does not match the lock" in r.stderr
    assert not (wheels / app["filename"]).exists() and not (wheels / (app["filename"] + ".part")).exists()


def test_fetch_interrupted_resumes_with_a_range_request(project, index, uv_wheel):
    assert run_cli("lock", cwd=project).returncode == 0
    index.delay = 0.002  # uv's 20 MB wheel now takes ~10 s
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*SGLBUILD, "fetch", "-j", "1"], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,  # Ctrl-C's default, even when the suite runs in the background
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    part = project / "wheels" / (uv_wheel.name + ".part")
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 1_000_000) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "fetch interrupted" in err and "run 'sglbuild fetch' again to resume" in err and "Traceback" not in err
    assert part.exists() and not (project / "wheels" / uv_wheel.name).exists()
    index.delay = 0
    index.requests.clear()
    r = run_cli("fetch", cwd=project)
    assert r.returncode == 0, r.stderr
    assert any(p.endswith(uv_wheel.name) and rng and rng.startswith("bytes=") for p, rng in index.requests)
    assert sha256(project / "wheels" / uv_wheel.name) == sha256(uv_wheel)


def test_fetch_on_a_full_disk_says_so(project, tmp_path):
    assert run_cli("lock", cwd=project).returncode == 0
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        r = run_cli("--wheels", str(small), "fetch", "-j", "1", cwd=project)
        assert r.returncode == 3, r.stderr
        assert "disk full while writing" in r.stderr and "Traceback" not in r.stderr
    finally:
        subprocess.run(["umount", str(small)])
