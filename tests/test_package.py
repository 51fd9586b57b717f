"""sglbuild as a package: it builds without warnings, and an installed copy (no checkout) renders.

Also the lock's PEP 751 twin: `lock --check` covers it, and a PEP 751 reader installs the same pins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from support import ROOT, populate_index, run_cli, small_profile


@pytest.mark.network
def test_the_package_builds_without_warnings_and_renders_without_a_checkout(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--isolated", "--no-deps", "--index-url", "https://pypi.org/simple",
                        "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warning" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    wheel = next((tmp_path / "dist").glob("sglbuild-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"builder/templates/Dockerfile.j2", "builder/templates/entrypoint.sh.j2", "builder/helpers/__main__.py"} <= set(names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    project = tmp_path / "elsewhere"
    project.mkdir()
    for f in ("sglbuild.toml", "locks/blackwell-final-v2.lock.json", "locks/pylock.blackwell-final-v2.toml"):
        (project / f).parent.mkdir(exist_ok=True)
        (project / f).write_text((ROOT / f).read_text())
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy first; its dependencies from this venv
    where = subprocess.run([sys.executable, "-c", "import builder; print(builder.__file__)"], env=env, cwd=project,
                           capture_output=True, text=True).stdout
    assert where.startswith(str(site))
    installed = subprocess.run([sys.executable, "-m", "builder.cli", "render"], env=env, cwd=project, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == run_cli("render", cwd=ROOT).stdout


def test_lock_check_covers_the_pylock(tmp_path):
    from builder.inputs.locking import write_lock
    from builder.inputs.lockfile import pylock_path
    from builder.inputs.profile import load_profile
    from test_lock_render import fixture_lock

    (tmp_path / "sglbuild.toml").write_text(small_profile("http://x/simple"))
    profile = load_profile(tmp_path / "sglbuild.toml")
    t = profile.target(None)
    write_lock(profile, t, fixture_lock(t))
    assert run_cli("lock", "--check", cwd=tmp_path).returncode == 0
    path = pylock_path(profile, t)
    good = path.read_text()
    path.write_text(good.replace('version = "1.0"', 'version = "1.1"', 1))
    r = run_cli("lock", "--check", cwd=tmp_path)
    assert r.returncode == 2 and "pylock.smalltest.toml: does not match the lock" in r.stderr
    r = run_cli("lock", cwd=tmp_path)  # an up-to-date lock: its pylock is rewritten from it, no network
    assert r.returncode == 0 and "up to date" in r.stdout and path.read_text() == good
    path.unlink()
    assert "missing" in run_cli("lock", "--check", cwd=tmp_path).stderr


def test_a_pep_751_reader_installs_the_same_pins(tmp_path, index, uv_wheel):
    """uv (the lock's own installer) installs the small target's pylock.toml into a plain venv."""
    populate_index(index, tmp_path, uv_wheel, None)
    project = tmp_path / "project"
    project.mkdir()
    (project / "sglbuild.toml").write_text(small_profile(index.url, registry_base=True))
    assert run_cli("lock", cwd=project).returncode == 0
    pylock = project / "locks" / "pylock.smalltest.toml"
    assert pylock.is_file()
    uv = tmp_path / "uv"
    with zipfile.ZipFile(uv_wheel) as zf:
        uv.write_bytes(zf.read(next(n for n in zf.namelist() if n.endswith(".data/scripts/uv"))))
    uv.chmod(0o755)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_NO_CONFIG": "1"}
    r = subprocess.run([str(uv), "pip", "install", "--python", str(venv / "bin" / "python"), "-r", str(pylock)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", "import importlib.metadata as m, json; "
                          "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"],
                         capture_output=True, text=True, check=True).stdout
    lock = json.loads((project / "locks" / "smalltest.lock.json").read_text())
    assert json.loads(out) == {w["name"]: w["version"] for w in lock["wheels"] if w["stage"] != "tools"}
