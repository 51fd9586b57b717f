from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import FAKE_SGLANG, ROOT, PackageIndex, make_wheel

sys.path.insert(0, str(ROOT))

TEST_IMAGE = "sglbuild-test/app"
UV_VERSION = "0.13.9"
CACHE = Path(os.environ.get("SGLBUILD_TEST_CACHE", Path.home() / ".cache" / "sglbuild-tests"))


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory):
    """sglbuild's state (which images passed verify) goes to this session's directory, never ~/.local/state."""
    d = tmp_path_factory.mktemp("state")
    os.environ["SGLBUILD_STATE"] = str(d)
    return d


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


@pytest.fixture(scope="session")
def engine(docker_client):
    """The same engine, through sglbuild's own engine component (for calling the steps directly)."""
    from builder.engine import Engine

    return Engine(docker_client, os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))


def _our_tags(client) -> set[str]:
    return {t for image in client.images.list() for t in image.tags if t.startswith(("sglbuild/", "sglbuild-test/"))}


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real registry on loopback (Debian's docker-registry), started by ci/registry.sh; its address."""
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tmp_path_factory.mktemp("registry")
    # SGLBUILD_TEST_REGISTRY_HOST: where the engine under test reaches this host (ci/engine.sh's engine: 10.200.26.1).
    host = os.environ.get("SGLBUILD_TEST_REGISTRY_HOST", "127.0.0.1")
    out = subprocess.run([str(ROOT / "ci" / "registry.sh"), str(port)], env={**os.environ, "REGISTRY_DIR": str(d), "REGISTRY_HOST": host},
                         capture_output=True, text=True, check=True).stdout.strip()
    yield out
    os.kill(int((d / "registry.pid").read_text()), signal.SIGTERM)  # the registry this fixture started, by its id


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


def need_nvcc() -> str:
    found = shutil.which("nvcc")
    if found is None:
        pytest.skip("nvcc is not installed (CUDA toolkit): no real GPU binaries to build")
    return found


def nvcc_so(tmp: Path, name: str, gencode: list[str], link: list[str] = ()) -> bytes:
    """A real shared object with GPU code compiled by nvcc (no CUDA runtime needed to read it)."""
    (tmp / f"{name}.cu").write_text('extern "C" __global__ void scale(float* x, float a) { x[threadIdx.x] *= a; }\n')
    subprocess.run(["nvcc", "-shared", "-Xcompiler", "-fPIC", "-cudart", "none", "-o", str(tmp / f"{name}.so"),
                    str(tmp / f"{name}.cu"), *gencode, *link], check=True, capture_output=True)
    return (tmp / f"{name}.so").read_bytes()


@pytest.fixture(scope="session")
def sm120_so(tmp_path_factory) -> bytes:
    """Like sgl_kernel's common ops: sm_120a SASS, and linked against libnuma.so.1."""
    need_nvcc()
    d = tmp_path_factory.mktemp("nvcc")
    # Stand-ins to link against: the image provides libnuma.so.1 (libnuma1); a GPU host's
    # NVIDIA runtime provides the driver's libcuda.so.1.
    for lib in ("libnuma.so.1", "libcuda.so.1"):
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{lib}", "-o", str(d / lib), "-x", "c", "-"],
                       input=b"int sglbuild_stub(void){return 0;}\n", check=True)
    return nvcc_so(d, "common_ops", ["-gencode", "arch=compute_120a,code=sm_120a"],
                   ["-Xlinker", "--no-as-needed", "-L", str(d), "-l:libnuma.so.1", "-l:libcuda.so.1"])


@pytest.fixture
def index(tmp_path) -> PackageIndex:
    idx = PackageIndex(tmp_path / "index")
    yield idx
    idx.stop()


DEBIAN_BASE = """suite = "bookworm"
packages = ["python3", "python3-venv", "libnuma1"]
source_date_epoch = 1758153600"""
REGISTRY_BASE = """image = "debian@sha256:""" + "0" * 64 + """"
python = "3.11.2"
glibc = "2.36"
source_date_epoch = 1758153600"""


def small_profile(index_url: str, *, name: str = "smalltest", app_version: str = "1.0", smoke: list[str] | None = None,
                  tools: bool = True, extra: str = "", native: bool = True, registry_base: bool = False) -> str:
    """A small real target; ``registry_base`` declares a registry base instead (lock then needs no mirror)."""
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
require_native = {'["sgltest_kernel/common_ops.so"]' if native else "[]"}
source = "https://example.invalid/sglbuild"
smoke = {smoke_toml}

[targets.{name}.base]
{REGISTRY_BASE if registry_base else DEBIAN_BASE}

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
    # Two wheels that ship the same module with different contents (as flashinfer-python and
    # torch-c-dlpack-ext both ship build_backend.py): the one later in the lock must win. The .pth
    # makes every Python start import a module (as cuda-bindings and setuptools do).
    for who in ("a", "b"):
        index.add(make_wheel(src, f"sgltest-clash-{who}", "1.0", files={
            f"sgltest_clash_{who}/__init__.py": b"", "sgltest_clash.py": f"WHO = {who!r}\n".encode(),
            f"sgltest_clash_{who}.pth": f"import sgltest_clash_{who}\n".encode()}))
    index.add(make_wheel(src, "sglang", "0.5.9", files=dict(FAKE_SGLANG)))
    index.add(uv_wheel)


def small_project(tmp: Path, uv_wheel: Path, sm120_so: bytes | None, name: str = "smalltest",
                  steps: tuple[tuple[str, ...], ...] = (("lock",), ("fetch",)), extra: str = "") -> tuple[Path, PackageIndex]:
    """A project directory for the small target, its index on loopback, and STEPS run on it."""
    from support import run_cli

    index = PackageIndex(tmp / "index")
    populate_index(index, tmp, uv_wheel, sm120_so)
    project = tmp / "project"
    project.mkdir()
    (project / "sglbuild.toml").write_text(small_profile(index.url, name=name, extra=extra))
    for args in steps:
        r = run_cli(*args, cwd=project)
        assert r.returncode == 0, r.stderr
    return project, index


def pytest_collection_modifyitems(items):
    """Mark each test by what it touches, from the fixtures it uses: `pytest -m "not engine and not network"`
    runs the unit layer in seconds, with no engine and no network."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"docker_client", "engine"}:
            item.add_marker(pytest.mark.engine)
        if names & {"uv_wheel"}:
            item.add_marker(pytest.mark.network)
