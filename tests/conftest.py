"""The suite's fixtures: the real engine (and what the suite leaves on it), a real registry, real wheels.

Helpers the tests share (wheels, a package index, the small target, images built from a
Dockerfile) are in ``support.py``; no test imports this module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import (CACHE, ROOT, UV_VERSION, PackageIndex, aarch64_so, engine_snapshot, left_behind, multi_project, need_nvcc,
                     nvcc_so, remove_left_behind)

sys.path.insert(0, str(ROOT))


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
    before = engine_snapshot(client)
    yield client
    # What the tests made in sglbuild's namespaces (its repositories, registry copies of them, its label, its
    # network) is removed, nothing else; then the suite checks that nothing of its own is left.
    remove_left_behind(client, before)
    left = left_behind(before, engine_snapshot(client))
    if left:
        pytest.fail(f"the suite left {len(left)} things on the engine: {', '.join(left[:8])}", pytrace=False)


@pytest.fixture(scope="session")
def engine(docker_client):
    """The same engine, through sglbuild's own engine component (for calling the steps directly)."""
    from builder.engine import Engine

    return Engine(docker_client, os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))


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
                         capture_output=True, text=True, check=True, timeout=600).stdout.strip()
    yield out
    os.kill(int((d / "registry.pid").read_text()), signal.SIGTERM)  # the registry this fixture started, by its id


def _uv(machine: str) -> Path:
    """The real uv wheel for MACHINE, fetched once from PyPI, then cached."""
    d = CACHE / "uv"
    found = sorted(d.glob(f"uv-{UV_VERSION}-*manylinux_2_17_{machine}*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--isolated", "--quiet", "--no-deps",
                        "--only-binary=:all:", "--platform", f"manylinux_2_17_{machine}", "--python-version", "3.11",
                        "--index-url", "https://pypi.org/simple", "-d", str(d), f"uv=={UV_VERSION}"], check=True, timeout=600)
        found = sorted(d.glob(f"uv-{UV_VERSION}-*manylinux_2_17_{machine}*.whl"))
    return found[0]


@pytest.fixture(scope="session")
def uv_wheel() -> Path:
    """The real uv wheel the default target installs with (x86-64)."""
    return _uv("x86_64")


@pytest.fixture(scope="session")
def uv_wheels() -> dict[str, Path]:
    """The real uv wheels for both machines a two-platform target builds for."""
    return {"x86_64": _uv("x86_64"), "aarch64": _uv("aarch64")}


@pytest.fixture(scope="session")
def arm64_so(tmp_path_factory) -> bytes:
    """Like sglang-kernel's aarch64 common ops: sm_121a SASS (DGX Spark), linked against libnuma.so.1. Needs the
    aarch64 binutils, installed here when missing (as root), as ci/registry.sh installs the registry."""
    import shutil

    need_nvcc()
    if shutil.which("aarch64-linux-gnu-ld") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "binutils-aarch64-linux-gnu"], check=True, capture_output=True, timeout=600)
    return aarch64_so(tmp_path_factory.mktemp("aarch64"), "common_ops", ["-gencode", "arch=compute_121a,code=sm_121a"])


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


def pytest_collection_modifyitems(config, items):
    """Mark each test by what it touches, from the fixtures it uses: `pytest -m "not engine and not network"`
    runs the unit layer in seconds, with no engine and no network. Tests marked `gpu` run only when asked
    for (`pytest -m gpu`, on a machine with an NVIDIA GPU)."""
    gpu_asked = "gpu" in (config.getoption("-m") or "")
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"docker_client", "engine"}:
            item.add_marker(pytest.mark.engine)
        if names & {"uv_wheel", "uv_wheels"}:
            item.add_marker(pytest.mark.network)
        if item.get_closest_marker("gpu") and not gpu_asked:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU: run 'pytest -m gpu' on a GPU machine"))


@pytest.fixture(scope="session")
def multi(tmp_path_factory, docker_client, uv_wheels, sm120_so, arm64_so):
    """The small two-platform target (linux/amd64 for sm_120, linux/arm64 for sm_121), locked, fetched and built on
    this engine (arm64 under emulation): the platforms' and the attestations' tests share its images."""
    tmp = tmp_path_factory.mktemp("multi")
    project, index = multi_project(tmp, uv_wheels, {"x86_64": sm120_so, "aarch64": arm64_so},
                                   steps=(("lock",), ("fetch",), ("build", "--json")), timeout=1800)
    yield {"project": project, "index": index, "client": docker_client, "tmp": tmp}
    index.stop()
