"""The GPU probe and verify's GPU checks on a real NVIDIA GPU, against that machine's own torch.

    pytest -m gpu tests/test_gpu.py      # on a machine with an NVIDIA GPU and torch (no Docker needed)

The probe's GPU half (:mod:`builder.probe.gpu`) and the JIT probe run here as they run inside an
image; verify's host half (:func:`builder.check.verify_gpu.checks_from_reply`) judges their answer.
Each check is also made to fail for real: with no GPU visible, and for an architecture that is not
this GPU's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from builder.check.verify_gpu import checks_from_reply
from builder.contracts import GpuReply
from support import ROOT

pytestmark = pytest.mark.gpu


def probe(*args: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, "-m", "builder.probe", *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reply() -> GpuReply:
    return GpuReply.from_dict(probe("gpu"))


def test_the_probe_sees_the_device_and_computes_right(reply):
    assert reply.available and reply.arch and reply.capability and reply.driver and reply.memory_gb > 1
    assert reply.matmul["ok"] and reply.matmul["rel_error"] < 1e-5  # float32 on fresh random data against float64 on the CPU
    torch_libs = [c for c in reply.coverage if c["library"].startswith("torch/")]
    assert any(c["verdict"] == "native" for c in torch_libs), reply.coverage  # this machine's torch has code for its GPU
    print(json.dumps({"device": reply.device, "arch": reply.arch, "driver": reply.driver, "matmul": reply.matmul,
                      "rmsnorm": reply.rmsnorm, "libraries": len(reply.coverage)}))


def test_verify_passes_the_device_it_is_built_for(reply):
    checks = {c.id: c for c in checks_from_reply(reply, [reply.arch])}
    assert checks["gpu-device"].status == "pass" and checks["gpu-compute"].status == "pass", checks


def test_verify_fails_when_no_gpu_is_visible():
    hidden = GpuReply.from_dict(probe("gpu", env={"CUDA_VISIBLE_DEVICES": ""}))
    assert hidden.available is False
    assert {c.status for c in checks_from_reply(hidden, ["sm_90"])} == {"fail"}


def test_a_library_without_this_gpus_code_is_named(reply):
    """What the device check says when the image's code is for another GPU: torch's own libraries, judged
    for an architecture this GPU is not, are no longer what covers it."""
    other = "sm_120" if reply.arch != "sm_120" else "sm_90"
    foreign = GpuReply(**{**reply.to_dict(), "coverage": [c for c in reply.coverage if not c["library"].startswith("torch/")]})
    device = checks_from_reply(foreign, [other])[0]
    assert device.status == "fail" and "NOT covered" in device.detail


def test_the_jit_probe_compiles_for_this_gpu_and_runs_the_kernel(reply):
    answer = probe("jit", "--target", reply.arch, "--run")[reply.arch]  # one answer per target architecture
    triton = answer["triton"]
    assert triton["ok"], triton
    assert triton["run"]["ok"] and triton["run"]["rel_error"] < 1e-2 and triton["run"]["same_cubin_as_probe"], triton
    print(json.dumps({"target": reply.arch, "triton": triton["triton"], "cubin": triton["cubin"], "run": triton["run"]}))
