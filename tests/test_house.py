"""One source for each setting, one description of each thing: the bugs two copies hid, each held by a test.

- serve printed one command (``--rm --runtime nvidia``) and ran another (neither);
- serve mounted ~/.cache/huggingface while doctor checked $HF_HOME; doctor assumed 8g of shared memory
  while the Qwen preset gives the server 16g;
- SGLBUILD_BUILDER was parsed twice, the BuildKit wheelhouse port written twice, scratch-directory
  prefixes in five modules and again in gc, and four atomic-write helpers, two of them without the
  process ID in their temporary file's name.
(verify and doctor disagreeing on the same image is held in test_units.)
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from pathlib import Path

import pytest

from builder.check.doctor import check_hf_cache, check_shm
from builder.check.report import Report
from builder.check.server import docker_run_argv, hf_cache, server_container, start
from builder.contracts import BUILDKIT_WHEELHOUSE_PORT, SCRATCH_PREFIXES
from builder.engine import requested_builder
from builder.engine.records import ImageConfig
from builder.state import atomic_write, scratch, scratch_leftovers
from support import ROOT, engine_snapshot, left_behind

BUILDER = ROOT / "builder"
LABELS = {"io.sglbuild.serve-flags": '["--host", "0.0.0.0", "--port", "8000"]'}
CONFIG = ImageConfig(entrypoint=("/usr/local/bin/sglbuild-entrypoint",), cmd=("--help",))


def parse_docker_run(argv: list[str]) -> dict:
    """The engine arguments a `docker run` command line asks for (the options serve prints)."""
    assert argv[:2] == ["docker", "run"]
    kw: dict = {"gpus": False, "ports": {}, "volumes": {}, "environment": {}, "name": None}
    i = 2
    while argv[i].startswith("-"):
        flag, value = argv[i], argv[i + 1]
        if flag == "--runtime":
            kw["runtime"] = value
        elif flag == "--gpus":
            kw["gpus"] = value == "all"
        elif flag == "-p":
            bind, host_port, port = value.rsplit(":", 2)
            kw["ports"][f"{port}/tcp"] = (bind, int(host_port))
        elif flag == "-v":
            source, bind, *mode = value.split(":")
            kw["volumes"][source] = {"bind": bind, "mode": mode[0] if mode else "rw"}
        elif flag == "-e":
            key, _, val = value.partition("=")
            kw["environment"][key] = val
        elif flag == "--shm-size":
            kw["shm_size"] = value
        elif flag == "--name":
            kw["name"] = value
        elif flag == "--entrypoint":
            kw["entrypoint"] = [value]
        else:
            raise AssertionError(f"unknown option {flag}")
        i += 2
    kw["image"], kw["command"] = argv[i], argv[i + 1:]
    return kw


@pytest.mark.parametrize("preset, public", [("tinyllama", False), ("qwen2.5-3b", True)])
def test_serve_prints_the_very_container_it_runs(tmp_path, preset, public):
    server = server_container("img:1", CONFIG, LABELS, None, preset, None, public=public, api_key="k" if public else None)
    printed = parse_docker_run(shlex.split(shlex.join(server.docker_run())))

    class Recorder:  # what start() hands the engine's containers component
        def start(self, image, command, **kw):
            self.asked = {"image": image, "command": command, **kw}
            from builder.engine.records import ContainerRecord

            return ContainerRecord("c" * 64, "n", "running")

    engine = type("EngineStub", (), {"containers": Recorder()})()
    start(engine, server)
    assert printed == engine.containers.asked  # every field: runtime, GPUs, ports, mounts, env, shm, name, entrypoint, command
    assert printed["runtime"] == "nvidia" and printed["gpus"] and printed["shm_size"] == ("16g" if preset == "qwen2.5-3b" else "8g")


def test_the_argv_names_every_engine_argument():
    """A field the description adds must reach the printed command: docker_run_argv refuses nothing silently."""
    server = server_container("img:1", CONFIG, LABELS, "m", None, 30000)
    kw = server.run_kwargs()
    assert set(kw) == {"entrypoint", "command", "runtime", "gpus", "ports", "volumes", "environment", "shm_size", "name"}
    assert "--runtime" in docker_run_argv("img:1", kw)


def test_the_hugging_face_cache_serve_mounts_is_the_one_doctor_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    server = server_container("img:1", CONFIG, LABELS, "m", None, 30000)
    assert list(server.run_kwargs()["volumes"]) == [str(tmp_path / "hf")] == [str(hf_cache())]
    report = Report("doctor", "img:1")
    check_hf_cache(report)
    assert report.checks[0].detail.startswith(str(tmp_path / "hf"))


def test_doctor_checks_the_shared_memory_the_server_gets():
    report = Report("doctor", "img:1")
    check_shm(report, server_container("img:1", CONFIG, LABELS, None, "qwen2.5-3b", None).shm)
    check_shm(report, server_container("img:1", CONFIG, LABELS, None, "tinyllama", None).shm)
    assert "--shm-size 16g" in report.checks[0].detail and "--shm-size 8g" in report.checks[1].detail


@pytest.mark.parametrize("value, chosen", [("classic", "classic"), ("buildkit", "buildkit"), ("auto", None), ("bogus", None), (None, None)])
def test_sglbuild_builder_is_read_in_one_place(monkeypatch, value, chosen):
    if value is None:
        monkeypatch.delenv("SGLBUILD_BUILDER", raising=False)
    else:
        monkeypatch.setenv("SGLBUILD_BUILDER", value)
    assert requested_builder() == chosen
    readers = [str(p.relative_to(ROOT)) for p in BUILDER.rglob("*.py") if re.search(r"environ\W+(get\W+)?SGLBUILD_BUILDER", p.read_text())]
    assert readers == ["builder/engine/__init__.py"]


def test_each_setting_is_written_once():
    """The BuildKit wheelhouse port and the scratch prefixes live in contracts.py; no other module spells them."""
    literals = [str(BUILDKIT_WHEELHOUSE_PORT), *SCRATCH_PREFIXES.values()]
    found = [f"{p.relative_to(ROOT)}: {lit}" for p in [*BUILDER.rglob("*.py"), *BUILDER.rglob("*.j2")] if p.name != "contracts.py"
             for lit in literals if lit in p.read_text()]
    assert not found, found


def test_gc_finds_every_kind_of_scratch_directory(tmp_path):
    made = []
    for kind in SCRATCH_PREFIXES:
        where = tmp_path if kind in ("served", "bench") else None
        d = scratch(kind, where)
        made.append(d)
    try:
        found = {str(p) for p in scratch_leftovers(tmp_path)}
        assert {d.name for d in made} <= found
    finally:
        for d in made:
            d.cleanup()


def test_one_atomic_write_named_for_its_process(tmp_path, monkeypatch):
    target = tmp_path / "records" / "x.json"
    atomic_write(target, "one")
    assert target.read_text() == "one"
    seen = []
    real_replace = os.replace

    def failing_replace(src, dst):
        seen.append(Path(src).name)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write(target, "two")
    monkeypatch.setattr(os, "replace", real_replace)
    assert seen == [f".x.json.{os.getpid()}.tmp"]  # two processes never share a temporary file
    assert target.read_text() == "one" and sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # nothing left
    writers = [str(p.relative_to(ROOT)) for p in BUILDER.rglob("*.py")
               if re.search(r"\.tmp\b|os\.replace\(", p.read_text()) and p.parent.name not in ("helpers",)]
    assert writers == ["builder/state.py", "builder/inputs/wheelhouse.py"]  # the one helper, and fetch's resume-then-rename


def test_the_suites_leftovers_are_counted():
    """Networks by name and ID: the build network make image left, removed by a test's gc and made again by a later build,
    is the suite's (it was once missed so). The suite's cache is not left behind."""
    before = {"tags": {"sglbuild/base:x"}, "images": set(), "containers": set(), "networks": {"sglbuild-build@aaa"}}
    after = {"tags": {"sglbuild/base:x", "127.0.0.1:5000/sglbuild-test/cache:app-1", "sglbuild/stage:app-2"}, "images": {"sha256:1"},
             "containers": set(), "networks": {"sglbuild-build@bbb"}}
    assert left_behind(before, after, ignore={"sglbuild/stage:app-2"}) == [
        "tag 127.0.0.1:5000/sglbuild-test/cache:app-1", "image sha256:1", "network sglbuild-build@bbb"]
    assert left_behind(after, after) == []
    assert engine_snapshot  # taken by the docker_client fixture before and after every engine session
    assert tempfile.gettempdir()
