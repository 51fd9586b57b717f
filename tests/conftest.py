"""The suite's fixtures: the real engine (and what the suite leaves on it), a real registry, real wheels.

Helpers the tests share (wheels, a package index, the small target, images built from a Dockerfile) are in
``support.py``, the cache of what is made once and kept between runs in ``testcache.py``; no test imports this module.

Tiers (markers set here from the fixtures a test uses, or on the test): ``make test-unit`` runs what needs neither
engine nor network; ``make test`` everything but ``full``; ``make test-engine`` the integration tests again on a second
engine; ``make test-full`` everything, the heavy evidence included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest

from support import (CACHE, ROOT, PackageIndex, arm64_kernel, engine_snapshot, left_behind, multi_project, need_nvcc,
                     prepare_family, remove_left_behind, sm120_kernel, uv_wheel_for)
from testcache import cacheable, cached_tags, keep, kept_images

sys.path.insert(0, str(ROOT))
# Bootstrapped bases are kept in the suite's cache (sglbuild's own base cache): a second engine, or a later run whose
# engine lost them, imports the root filesystem instead of bootstrapping it again (minutes for arm64, emulated).
os.environ.setdefault("SGLBUILD_BASE_CACHE", str(CACHE / "bases"))


# -- the session: the engine before and after, the suite's cache ------------------------------------

def _engine_client() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - no engine: the unit tier runs without one
        return None


def _worker(config: pytest.Config) -> bool:
    """A pytest-xdist worker: the controller takes the engine's snapshots and keeps the cache, once for all workers."""
    return hasattr(config, "workerinput")


def _parallel(config: pytest.Config) -> bool:
    return _worker(config) or bool(getattr(config.option, "numprocesses", None))


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = None
    client = None if _worker(session.config) else _engine_client()
    if client is not None:
        session.config.stash[_BEFORE] = engine_snapshot(client)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """What the tests made in sglbuild's namespaces (its repositories, registry copies of them, its label, its network)
    is removed, but for the suite's cache (test bases and the small targets' stages); what is still there after that fails
    the session."""
    before = session.config.stash.get(_BEFORE, None)
    prefetch = session.config.stash.get(_PREFETCH, None)
    if prefetch is not None:
        prefetch.close()
    if before is None:
        return
    client = _engine_client()
    after = engine_snapshot(client)
    keep(client, {t for t in after["tags"] - before["tags"] if cacheable(t)}, _used_stage_keys(session.config))
    cache = cached_tags(client)
    remove_left_behind(client, before, keep=cache)
    left = left_behind(before, engine_snapshot(client), ignore=cache | kept_images(client))
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"the suite left {len(left)} things on the engine: {', '.join(left[:8])}"
        if reporter is not None:
            reporter.write_line(f"ERROR {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _used_stage_keys(config: pytest.Config) -> set[str]:
    """The stage keys this session's builds used: every stages.json of its state directories (one per worker)."""
    import json

    keys: set[str] = set()
    for records in config._tmp_path_factory.getbasetemp().glob("**/state*/stages.json"):  # type: ignore[attr-defined]
        try:
            keys |= set(json.loads(records.read_text()))
        except (OSError, ValueError):
            pass
    return keys


_BEFORE = pytest.StashKey[Any]()
_PREFETCH = pytest.StashKey[Any]()


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory):
    """sglbuild's state (which images passed verify) goes to this session's directory, never ~/.local/state."""
    d = tmp_path_factory.mktemp("state")
    os.environ["SGLBUILD_STATE"] = str(d)
    return d


@pytest.fixture(scope="session")
def docker_client():
    """The real engine. Integration tests fail (not skip) without one: CI brings it up."""
    client = _engine_client()
    if client is None:
        pytest.fail("no Docker engine answers: run ci/bootstrap-host.sh first", pytrace=False)
    return client


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


@pytest.fixture(scope="session")
def uv_wheel() -> Path:
    """The real uv wheel the default target installs with (x86-64)."""
    return uv_wheel_for("x86_64")


@pytest.fixture(scope="session")
def uv_wheels() -> dict[str, Path]:
    """The real uv wheels for both machines a two-platform target builds for."""
    return {"x86_64": uv_wheel_for("x86_64"), "aarch64": uv_wheel_for("aarch64")}


@pytest.fixture(scope="session")
def arm64_so() -> bytes:
    """Like sglang-kernel's aarch64 common ops: sm_121a SASS (DGX Spark), linked against libnuma.so.1."""
    need_nvcc()
    return arm64_kernel()


@pytest.fixture(scope="session")
def sm120_so() -> bytes:
    """Like sgl_kernel's common ops: sm_120a SASS, and linked against libnuma.so.1 (the image's libnuma1) and the driver's
    libcuda.so.1 (a GPU host's NVIDIA runtime provides it)."""
    need_nvcc()
    return sm120_kernel()


@pytest.fixture
def index(tmp_path) -> PackageIndex:
    idx = PackageIndex(tmp_path / "index")
    yield idx
    idx.stop()


# -- engine-free work done ahead, in the background ------------------------------------------------------

class Prefetch:
    """Slow work that touches no engine (locks, bootstrapping bases under emulation, cuobjdump's answers), started when
    the session starts and run one job at a time beside the tests; a fixture that needs a job's result waits for it."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sglbuild-prefetch")
        self.jobs: dict[str, Future] = {}

    def submit(self, name: str, job: Callable[[], Any]) -> None:
        self.jobs[name] = self.pool.submit(job)

    def result(self, name: str, timeout: float = 1800) -> Any:
        return self.jobs[name].result(timeout=timeout) if name in self.jobs else None

    def close(self) -> None:
        for job in self.jobs.values():
            job.cancel()
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="session", autouse=True)
def prefetch(request, tmp_path_factory, state_dir) -> Prefetch:
    ahead = Prefetch()
    request.config.stash[_PREFETCH] = ahead
    if _parallel(request.config):  # under pytest-xdist the two-platform target's file starts first, on a worker of its own
        return ahead
    names = {n for item in request.session.items for n in getattr(item, "fixturenames", ())}
    if "multi" in names and _engine_client() is not None and _nvcc_there():
        ahead.submit("multi", lambda: prepare_family(tmp_path_factory.mktemp("multi"), uv_wheel_for, _engine_client()))
    if any(item.name == "test_every_gpu_file_of_the_wheelhouse_gets_cuobjdumps_answer" for item in request.session.items):
        ahead.submit("wheelhouse", _wheelhouse_ahead)
    return ahead


def _wheelhouse_ahead() -> Any:
    """sglbuild's reader and cuobjdump on every GPU file of the default target's wheelhouse (cuobjdump's answers kept by
    file); None when the wheelhouse is not filled or cuobjdump is missing (the test says so)."""
    from authority import compare_wheelhouse, find_cuobjdump
    from builder.inputs.lockfile import read_lock
    from builder.inputs.profile import load_profile

    profile = load_profile(ROOT / "sglbuild.toml")
    lock = read_lock(profile, profile.target(None))
    tool = find_cuobjdump()
    if tool is None or any(not (ROOT / "wheels" / w.filename).is_file() for w in lock.wheels):
        return None
    return compare_wheelhouse(ROOT / "wheels", tool, cache=CACHE / "cuobjdump-answers.json", workers=1)


def _nvcc_there() -> bool:
    import shutil

    return shutil.which("nvcc") is not None


@pytest.fixture(scope="session")
def multi(prefetch, docker_client, uv_wheels, sm120_so, arm64_so, tmp_path_factory):
    """The small two-platform target (linux/amd64 for sm_120, linux/arm64 for sm_121), locked, fetched and built on
    this engine (arm64 under emulation): the platforms' and the attestations' tests share its images."""
    from support import run_cli

    ahead = prefetch.result("multi")
    if ahead is None:
        ahead = multi_project(tmp_path_factory.mktemp("multi"), uv_wheels, {"x86_64": sm120_so, "aarch64": arm64_so}, steps=(("lock",),))
    project, index = ahead
    for args in (("fetch",), ("build", "--json")):
        r = run_cli(*args, cwd=project, timeout=1800)
        assert r.returncode == 0, r.stderr
    yield {"project": project, "index": index, "client": docker_client, "tmp": project.parent}
    index.stop()


# -- markers and order ---------------------------------------------------------------------------------

def pytest_collection_modifyitems(config, items):
    """Mark each test by what it touches, from the fixtures it uses: `pytest -m "not engine and not network"`
    runs the unit layer in seconds, with no engine and no network. Tests marked `gpu` run only when asked
    for (`pytest -m gpu`, on a machine with an NVIDIA GPU).

    Under pytest-xdist (`-n 2 --dist loadfile --no-loadscope-reorder`) each file runs on one worker (its module fixtures
    built once), and the two-platform target's file (every test of its images) is handed out first: its arm64 base and
    stages, built under emulation, are the long pole. Run alone, those tests come last instead, so that the arm64 base,
    bootstrapped in the background from the start, is ready when they need it."""
    gpu_asked = "gpu" in (config.getoption("-m") or "")
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"docker_client", "engine"}:
            item.add_marker(pytest.mark.engine)
        if names & {"uv_wheel", "uv_wheels"}:
            item.add_marker(pytest.mark.network)
        if item.get_closest_marker("gpu") and not gpu_asked:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU: run 'pytest -m gpu' on a GPU machine"))
    family = {item.path for item in items if "multi" in getattr(item, "fixturenames", ())}
    if not _parallel(config):
        items.sort(key=lambda item: item.path in family)  # stable: the file order otherwise
        return
    # pytest-xdist hands each worker two files at the start and one more each time it finishes one: the family's first,
    # then a light one (it waits behind the family on that worker), then the rest slowest first, so the workers end
    # together. Seconds each file took on a fresh 2-core machine; a file not listed counts as light.
    weight = {"test_evidence.py": 200, "test_repro.py": 150, "test_build.py": 120, "test_fatbin.py": 90, "test_toolchain.py": 70,
              "test_verify.py": 60, "test_pipeline.py": 25, "test_resolve_fetch.py": 20, "test_quoting.py": 15}
    items.sort(key=lambda item: (item.path not in family, item.path.name != "test_layout.py", -weight.get(item.path.name, 0)))
