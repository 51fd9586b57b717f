"""A stage of Debian packages over the shared base (FlashInfer's C++ compiler) and a CUDA install's layout over the
venv's NVIDIA wheels: locked by file and sha256 from the suite's signed index, installed with no network, the same
image twice, and a changed package refused before any build."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from builder.assemble.plan import make_plan
from builder.inputs.lockfile import read_lock
from builder.inputs.profile import load_profile

from support import TEST_IMAGE, make_wheel, run_cli, run_steps, small_project

pytestmark = pytest.mark.engine

TOOLCHAIN = """
[[targets.smalltest.stage]]
name = "toolchain"
requires = ["sgltest-nvcc==13.0"]
debian = ["g++"]
cuda_home = "/opt/cuda"
"""
NVCC = b"#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n"


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory, docker_client, uv_wheel, sm120_so):
    tmp = tmp_path_factory.mktemp("toolchain")
    project, index = small_project(tmp, uv_wheel, sm120_so, steps=(), extra=TOOLCHAIN)
    # nvidia-cuda-nvcc's layout since CUDA 13: one tree, nvidia/cu13 (bin, include, lib, nvvm), across the wheels.
    index.add(make_wheel(tmp / "built-wheels", "sgltest-nvcc", "13.0", tag="py3-none-manylinux2014_x86_64",
                         files={"nvidia/cu13/bin/nvcc": NVCC, "nvidia/cu13/include/cuda_runtime.h": b"/* */\n",
                                "nvidia/cu13/lib/libcudart.so.13": b"\x7fELF stand-in\n", "nvidia/cu13/nvvm/bin/cicc": NVCC},
                         executable=("nvidia/cu13/bin/nvcc", "nvidia/cu13/nvvm/bin/cicc")))
    run_steps(project, (("lock",), ("fetch",), ("build",)))
    yield {"project": project, "client": docker_client, "index": index}
    index.stop()


def sh(client, image: str, script: str) -> str:
    return client.containers.run(image, ["sh", "-c", script], remove=True, network_disabled=True).decode()


def test_the_lock_pins_the_stages_debian_packages_by_file_from_the_signed_index(toolchain):
    lock = json.loads((toolchain["project"] / "locks" / "smalltest.lock.json").read_text())
    debs = {d["name"]: d for d in lock["debs"]}
    # What g++ adds over the base's closure: this small base has no gcc, so the C compiler comes too.
    assert {"g++", "g++-12", "libstdc++-12-dev", "gcc-12", "binutils"} <= set(debs) and not set(debs) & set(lock["debian"])
    assert all(d["stage"] == "toolchain" and len(d["sha256"]) == 64 and d["url"].startswith("http://deb.debian.org/debian/pool/main/")
               and d["filename"].endswith("_amd64.deb") for d in debs.values())
    assert "g++" not in lock["debian"]  # the base's own closure is unchanged: base and system stay shared


def test_the_image_compiles_cxx_and_links_against_the_cuda_layout(toolchain):
    client = toolchain["client"]
    image = f"{TEST_IMAGE}:smalltest"
    assert "CUDA_HOME=/opt/cuda" in client.images.get(image).attrs["Config"]["Env"]
    out = sh(client, image, "c++ --version | head -1; /opt/cuda/bin/nvcc --version; readlink /opt/cuda/lib64/libcudart.so; "
                            "readelf -d /opt/cuda/lib64/stubs/libcuda.so | grep SONAME; "
                            "printf 'extern \"C\" int cuInit(unsigned); int main(){return 0;}' | c++ -x c++ - -o /tmp/a "
                            "-L/opt/cuda/lib64/stubs -Wl,--no-as-needed -lcuda && readelf -d /tmp/a | grep NEEDED | grep -c libcuda.so.1")
    lines = out.splitlines()
    assert lines[0].startswith("c++ (Debian 12.2.0-14")
    assert lines[1] == "Cuda compilation tools, release 13.0, V13.0.88"
    assert lines[2] == "/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcudart.so.13"
    assert "Library soname: [libcuda.so.1]" in lines[3] and lines[4] == "1"  # what the driver's library answers to


def test_the_toolchain_stage_shares_base_and_system_with_the_target_without_it(toolchain, engine):
    project = toolchain["project"]
    plan = json.loads(run_cli("plan", "--json", cwd=project).stdout)[0]
    stages = {s["name"]: s for s in plan["stages"]}
    assert list(stages)[-2:] == ["toolchain", "final"] and stages["toolchain"]["next_build"] == "reuse"
    target = load_profile(project / "sglbuild.toml").target(None)
    lock = read_lock(load_profile(project / "sglbuild.toml"), target)
    plain = make_plan(replace(target, stages=target.stages[:-1]), replace(lock, debs=[]), "r", builder=engine.builder)
    assert plain.base == plan["base"]["ref"] and plain.stages[0].tag == stages["system"]["tag"]
    assert [s.tag for s in plain.stages[:-1]] == [stages[s.name]["tag"] for s in plain.stages[:-1]]  # torch..app too


def test_a_changed_debian_package_is_refused_before_any_build(toolchain):
    project = toolchain["project"]
    lock = json.loads((project / "locks" / "smalltest.lock.json").read_text())
    deb = project / "wheels" / next(d["filename"] for d in lock["debs"] if d["name"] == "g++")
    good = deb.read_bytes()
    try:
        deb.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        r = run_cli("build", "--no-cache", cwd=project)
        error = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 5 and error.startswith("sglbuild: error: ") and deb.name in error and "Traceback" not in r.stderr
    finally:
        deb.write_bytes(good)


def test_the_toolchain_stage_is_reproducible(toolchain, engine):
    """dpkg and update-alternatives write logs with the time of day; the stage removes them: the stage built again from
    nothing (no engine cache; the stages below it as they are, their own rebuilds are the repro tests'), offline, is the
    same image."""
    from builder.assemble.stages import build_stages
    from builder.inputs.lockfile import check_lock
    from builder.ui import Reporter

    project = toolchain["project"]
    profile = load_profile(project / "sglbuild.toml")
    target = profile.target(None)
    plan = make_plan(target, check_lock(profile, target), "r", builder=engine.builder)
    stage = next(s for s in plan.stages if s.name == "toolchain")
    first = engine.images.get(stage.tag)
    toolchain["index"].stop()
    again = build_stages(engine, plan, project / "wheels", Reporter(quiet=True), fresh=True, only=[stage])
    # The same layers (the stage's files, byte for byte); a stage image's config also names the build's wheel server,
    # which the final image's normalized config leaves out (the repro tests hold the final image's ID).
    assert again[0].status == "built" and engine.images.get(again[0].image_id).layers == first.layers
