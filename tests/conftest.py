from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT, PackageIndex, make_wheel

sys.path.insert(0, str(ROOT))

TEST_IMAGE = "sglbuild-test/app"
UV_VERSION = "0.13.9"
CACHE = Path(os.environ.get("SGLBUILD_TEST_CACHE", Path.home() / ".cache" / "sglbuild-tests"))


@pytest.fixture(scope="session")
def docker_client():
    """The real engine. Integration tests fail (not skip) without one: CI brings it up."""
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"no Docker engine answers ({exc}); run ci/bootstrap-host.sh first", pytrace=False)
    before = _our_tags(client)
    yield client
    # Remove the images the tests made (in sglbuild's namespaces); nothing else is touched.
    for tag in _our_tags(client) - before:
        try:
            client.images.remove(tag, force=True)
        except Exception:  # noqa: BLE001
            pass


def _our_tags(client) -> set[str]:
    return {t for image in client.images.list() for t in image.tags if t.startswith(("sglbuild/", "sglbuild-test/"))}


@pytest.fixture(scope="session")
def uv_wheel() -> Path:
    """The real uv wheel the default target installs with (fetched once from PyPI, then cached)."""
    d = CACHE / "uv"
    found = sorted(d.glob(f"uv-{UV_VERSION}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--isolated", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
                        "--index-url", "https://pypi.org/simple", "-d", str(d), f"uv=={UV_VERSION}"], check=True)
        found = sorted(d.glob(f"uv-{UV_VERSION}-*.whl"))
    return found[0]


@pytest.fixture(scope="session")
def sm120_so(tmp_path_factory) -> bytes | None:
    """A shared object with real sm_120 SASS and compute_120 PTX, compiled by nvcc (None without nvcc)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    d = tmp_path_factory.mktemp("nvcc")
    (d / "k.cu").write_text('extern "C" __global__ void scale(float* x, float a) { x[threadIdx.x] *= a; }\n')
    subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-o", str(d / "k.so"), str(d / "k.cu"),
                    "-gencode", "arch=compute_120,code=sm_120", "-gencode", "arch=compute_120,code=compute_120"],
                   check=True, capture_output=True)
    return (d / "k.so").read_bytes()


@pytest.fixture
def index(tmp_path) -> PackageIndex:
    idx = PackageIndex(tmp_path / "index")
    yield idx
    idx.stop()


def small_profile(index_url: str, *, name: str = "smalltest", app_version: str = "1.0", smoke: list[str] | None = None,
                  tools: bool = True, extra: str = "") -> str:
    smoke = smoke if smoke is not None else ["python -c 'import sgltest_app, sgltest_kernel; print(sgltest_app.__version__)'"]
    smoke_toml = "[" + ", ".join(repr(s).replace("'", '"') if "'" not in s else '"' + s.replace('"', '\\"') + '"' for s in smoke) + "]"
    tools_toml = f'tools = ["uv=={UV_VERSION}"]' if tools else ""
    return f"""
default_target = "{name}"

[targets.{name}]
description = "sglbuild's small integration target"
image = "{TEST_IMAGE}"
tag = "{name}"
gpu_arch = "sm_120"
source = "https://example.invalid/sglbuild"
smoke = {smoke_toml}

[targets.{name}.base]
suite = "bookworm"
packages = ["python3", "python3-venv"]
source_date_epoch = 1758153600

[targets.{name}.python]
index = "{index_url}"
{tools_toml}

[[targets.{name}.stage]]
name = "torch"
requires = ["sgltest-torch==2.9.1"]

[[targets.{name}.stage]]
name = "kernel"
requires = ["sgltest-kernel==0.3.21"]

[[targets.{name}.stage]]
name = "app"
requires = ["sgltest-app=={app_version}"]
{extra}
"""


def populate_index(index: PackageIndex, tmp: Path, uv_wheel: Path, sm120_so: bytes | None) -> None:
    src = tmp / "built-wheels"
    index.add(make_wheel(src, "sgltest-torch", "2.9.1", requires=["sgltest-dep>=1"]))
    index.add(make_wheel(src, "sgltest-dep", "1.2"))
    kernel_files = {"sgltest_kernel/__init__.py": b"KIND = 'kernel'\n"}
    if sm120_so is not None:
        kernel_files["sgltest_kernel/common_ops.so"] = sm120_so
    index.add(make_wheel(src, "sgltest-kernel", "0.3.21", files=kernel_files, requires=["sgltest-torch"]))
    for v in ("1.0", "1.1"):
        index.add(make_wheel(src, "sgltest-app", v, requires=["sgltest-torch==2.9.1", "sgltest-kernel==0.3.21",
                                                               'sgltest-windows-only; sys_platform == "win32"']))
    index.add(uv_wheel)
