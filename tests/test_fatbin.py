"""The fatbin parser on real nvcc output, checked against cuobjdump where it is installed."""

from __future__ import annotations

import io
import sys
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.contracts import GpuCode
from builder.errors import FatbinError
from builder.probe.fatbin import arch_key, scan_file, scan_stream, scan_wheel, verdict
from support import make_wheel, run_cli

KERNELS = """
extern "C" __global__ void scale(float* x, float a) { x[threadIdx.x] *= a; }
extern "C" __global__ void add(float* x, float a) { x[threadIdx.x] += a; }
"""
VARIANTS = {
    "sass": (["-gencode", "arch=compute_120,code=sm_120"], {"sm_120"}, set()),
    "arch_specific": (["-gencode", "arch=compute_120a,code=sm_120a"], {"sm_120a"}, set()),
    "ptx_only": (["-gencode", "arch=compute_120,code=compute_120"], set(), {"compute_120"}),
    "several": (["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90a,code=sm_90a",
                 "-gencode", "arch=compute_120,code=[sm_120,compute_120]"], {"sm_80", "sm_90a", "sm_120"}, {"compute_120"}),
    "compressed": (["-gencode", "arch=compute_120,code=sm_120", "-Xfatbin", "-compress-all"], {"sm_120"}, set()),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed: no real fatbins to read")
    d = tmp_path_factory.mktemp("fatbins")
    (d / "k.cu").write_text(KERNELS)
    out = {}
    for name, (flags, _, _) in VARIANTS.items():
        so = d / f"{name}.so"
        subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-o", str(so), str(d / "k.cu"), *flags], check=True, capture_output=True)
        out[name] = so
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / "host.so"), "-x", "c", "-"], input=b"int f(void){return 1;}\n", check=True)
    out["host"] = d / "host.so"
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_architectures_of_real_nvcc_output(built, name):
    code = scan_file(built[name])
    _, sass, ptx = VARIANTS[name]
    assert set(code.sass) == sass and set(code.ptx) == ptx
    if name == "compressed":
        assert code.compressed == code.entries > 0
    if name == "several":
        assert code.entries == 7  # nvcc 13 writes two ELF images per SASS target, plus the PTX


def cuobjdump() -> str | None:
    """cuobjdump from PATH, or from PyPI's nvidia-cuda-cuobjdump (a test dependency)."""
    found = shutil.which("cuobjdump")
    hits = sorted(Path(sys.prefix).glob("lib/python3*/site-packages/nvidia/cu*/bin/cuobjdump"))
    return found or (str(hits[0]) if hits else None)


def test_matches_cuobjdump_when_installed(built):
    tool = cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump is not installed (pip install nvidia-cuda-cuobjdump)")
    for name in VARIANTS:
        listing = subprocess.run([tool, "--list-elf", "--list-ptx", str(built[name])], capture_output=True, text=True).stdout
        theirs = set(re.findall(r"\.(sm_\d+a?)\.cubin", listing))
        ours = {a.rstrip("f") for a in scan_file(built[name]).sass}
        assert ours == theirs, name


def test_no_gpu_code_is_not_an_error(built):
    code = scan_file(built["host"])
    assert not code.has_gpu_code and code.entries == 0
    assert scan_stream(io.BytesIO(b"#!/bin/sh\n"), "script").has_gpu_code is False


def test_truncated_and_corrupt_fatbins_name_file_and_offset(built, tmp_path):
    data = built["several"].read_bytes()
    magic = data.find(b"\x50\xed\x55\xba")
    bad = tmp_path / "corrupt.so"
    bad.write_bytes(data[:magic + 16] + b"\x07\x00" + data[magic + 18:])  # first entry's kind := 7
    with pytest.raises(FatbinError, match=rf"corrupt.so: corrupt fatbin entry at offset {magic + 16:#x}"):
        scan_file(bad)
    short = tmp_path / "short.so"
    short.write_bytes(data[: magic + 200])
    with pytest.raises(FatbinError, match=r"short.so: truncated"):
        scan_file(short)


def test_wheel_is_read_in_place(built, tmp_path):
    wheel = make_wheel(tmp_path, "gpukit", "1.0", files={"gpukit/ops.so": built["several"].read_bytes(),
                                                        "gpukit/host.so": built["host"].read_bytes()})
    codes = {c.path.split("!")[1]: c for c in scan_wheel(wheel)}
    assert codes["gpukit/ops.so"].sass == ["sm_80", "sm_90a", "sm_120"]
    assert not codes["gpukit/host.so"].has_gpu_code
    assert not any(p.suffix == ".so" for p in tmp_path.rglob("*"))  # nothing unpacked


def test_verdicts():
    g = GpuCode("x", sass=["sm_80", "sm_90a", "sm_100a", "sm_120a"])
    assert verdict(g, "sm_120") == "native" and verdict(g, "sm_90") == "native" and verdict(g, "sm_121") == "none"
    assert verdict(GpuCode("y", sass=["sm_80", "sm_90"], ptx=["compute_90"]), "sm_120") == "ptx-jit"
    assert verdict(GpuCode("z", sass=["sm_80", "sm_86", "sm_90a"]), "sm_120") == "none"
    assert verdict(GpuCode("w", sass=["sm_120"]), "sm_121") == "native"
    assert sorted(["sm_120", "sm_90a", "sm_80"], key=arch_key) == ["sm_80", "sm_90a", "sm_120"]


def test_archs_command_table_and_json(built, tmp_path):
    r = run_cli("archs", str(built["several"]), str(built["host"]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"several.so\s+sm_80 sm_90a sm_120\s+compute_120", r.stdout)
    assert re.search(r"host.so\s+no GPU code", r.stdout)
    import json
    r = run_cli("archs", "--json", str(built["ptx_only"]), cwd=tmp_path)
    assert json.loads(r.stdout)[0]["ptx"] == ["compute_120"]
    r = run_cli("archs", str(tmp_path / "missing.so"), cwd=tmp_path)
    assert r.returncode == 2 and "no such file" in r.stderr  # a missing file is bad input, not a hash mismatch
