"""The GPU probe: on a GPU, inside an image or on any machine with Python and torch.

    python3 -m builder.probe gpu [--target sm_120]

reports the device (name, compute capability, driver), which of the installed GPU
libraries (torch, sgl_kernel) have code for this device, a matmul on the GPU against
the CPU, and sgl_kernel's RMSNorm against a torch reference. torch and sgl_kernel are
the image's own, imported when the probe runs; the module itself is standard library only.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import time
from pathlib import Path
from typing import Optional

from ..contracts import GpuReply
from .fatbin import scan_tree, verdict


def _driver_version() -> Optional[str]:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
            return f"CUDA {v.value // 1000}.{v.value % 1000 // 10}"
    except OSError:
        pass
    return None


def gpu_checks(target: Optional[str]) -> GpuReply:
    import torch

    reply = GpuReply(torch=torch.__version__, cuda_runtime=torch.version.cuda, driver=_driver_version(),
                     available=torch.cuda.is_available())
    if not reply.available:
        return reply
    props = torch.cuda.get_device_properties(0)
    reply.arch = f"sm_{props.major}{props.minor}"
    reply.device, reply.capability = props.name, f"{props.major}.{props.minor}"
    reply.memory_gb = round(props.total_memory / 2**30, 1)
    # What would and would not run on this card: every GPU library of torch and sgl_kernel.
    roots = [os.path.dirname(torch.__file__)]
    spec = importlib.util.find_spec("sgl_kernel")
    if spec and spec.submodule_search_locations:
        roots += list(spec.submodule_search_locations)
    for root in roots:
        for code in scan_tree(Path(root)):
            if code.has_gpu_code:
                reply.coverage.append({"library": os.path.relpath(code.path, os.path.dirname(root)),
                                       "verdict": verdict(code, reply.arch), "sass": code.sass, "ptx": code.ptx})
    # A matmul on the GPU against the CPU (float32, TF32 off, fresh random inputs).
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(1024, 1024, dtype=torch.float64), torch.randn(1024, 1024, dtype=torch.float64)
    ref = a @ b
    t0 = time.perf_counter()
    got = (a.float().cuda() @ b.float().cuda()).double().cpu()
    torch.cuda.synchronize()
    err = float((got - ref).norm() / ref.norm())
    reply.matmul = {"ok": err < 1e-5, "rel_error": err, "ms": round((time.perf_counter() - t0) * 1000, 2)}
    # sgl_kernel's RMSNorm (the op that failed on RTX 5090 upstream) against torch.
    try:
        import sgl_kernel

        x = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
        ref = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()
        got = sgl_kernel.rmsnorm(x, w, 1e-6).float()
        err = float((got - ref).norm() / ref.norm())
        reply.rmsnorm = {"ok": err < 1e-2, "rel_error": err}
    except ImportError as exc:
        reply.rmsnorm = {"ok": None, "skipped": f"sgl_kernel is not importable: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot run is the finding
        reply.rmsnorm = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return reply
