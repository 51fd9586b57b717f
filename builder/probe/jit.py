"""The JIT probe: can the image's run-time compilers make code for the target, without a GPU?

    python3 -m builder.probe jit --target sm_120 [--run]

Much of SGLang's fast path on a new GPU is not SASS in a library but code compiled at run
time: Triton kernels (the triton attention backend, MoE, sampling), compiled by the ptxas
Triton bundles, and FlashInfer's kernels, found among its precompiled cubins or compiled with
nvcc. This compiles a representative Triton kernel (a bf16 ``tl.dot`` tile, the instruction mix
of attention and MoE) for the target and reads the cubin back with the fatbin reader; it
looks for FlashInfer's cubins for the target and for its JIT toolchain, and, where the
toolchain is complete, compiles one FlashInfer kernel for the target. With ``--run`` and a
GPU of that architecture, the Triton kernel also runs and is compared with torch.

Each answer says why when it is no. Standard library only at import: triton, torch and
flashinfer are the image's own, imported where they are examined.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ..contracts import SCRATCH_PREFIXES
from .fatbin import scan_file, scan_tree, verdict

_BLOCK = 64


def _capability(target: str) -> int:
    return int("".join(c for c in target if c.isdigit()))


def triton_check(target: str, run: bool = False) -> Dict[str, Any]:
    """Compile (and with RUN, run) a bf16 tl.dot kernel for TARGET with the image's Triton."""
    if importlib.util.find_spec("triton") is None:
        return {"ok": False, "error": "triton is not installed"}
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    @triton.jit
    def dot_tile(a_ptr, b_ptr, c_ptr, BLOCK: tl.constexpr):  # noqa: N803 - Triton's constexpr style
        offs = tl.arange(0, BLOCK)
        a = tl.load(a_ptr + offs[:, None] * BLOCK + offs[None, :])
        b = tl.load(b_ptr + offs[:, None] * BLOCK + offs[None, :])
        tl.store(c_ptr + offs[:, None] * BLOCK + offs[None, :], tl.dot(a, b))

    answer: Dict[str, Any] = {"triton": triton.__version__, "kernel": "bf16 tl.dot 64x64 tile"}
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    answer["ptxas"] = str(ptxas) if ptxas.exists() else None
    t0 = time.perf_counter()
    try:
        # The pointers carry the 16-byte alignment hint Triton's launcher gives torch's tensors (its AOT
        # tool, triton.tools.compile, spells it the same way), so this is the kernel a launch compiles.
        src = ASTSource(fn=dot_tile, signature={"a_ptr": "*bf16", "b_ptr": "*bf16", "c_ptr": "*fp32", "BLOCK": "constexpr"},
                        constexprs={"BLOCK": _BLOCK}, attrs={(i,): [["tt.divisibility", 16]] for i in range(3)})
        compiled = triton.compile(src, target=GPUTarget("cuda", _capability(target), 32))
    except Exception as exc:  # noqa: BLE001 - a compiler that cannot target the GPU is the finding
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
        return {**answer, "ok": False, "error": f"{type(exc).__name__}: {lines[-1][:300]}"}
    answer["compile_s"] = round(time.perf_counter() - t0, 2)
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        code = scan_file(Path(f.name))
    answer.update(ok=verdict(code, target) == "native", cubin=code.sass, ptx_target=_ptx_target(compiled.asm.get("ptx", "")))
    if not answer["ok"]:
        answer["error"] = f"the cubin Triton made is {', '.join(code.sass) or 'empty'}, which does not run on {target}"
    if run and answer["ok"]:
        answer["run"] = _run_dot(dot_tile, compiled)
        answer["ok"] = answer["run"].get("ok") is not False  # a run skipped for want of a GPU leaves the compile verdict
    return answer


def _ptx_target(ptx: str) -> Optional[str]:
    return next((line.split()[1] for line in ptx.splitlines() if line.startswith(".target")), None)


def _run_dot(kernel: Any, compiled: Any) -> Dict[str, Any]:
    """Run the kernel on this GPU through Triton's own launcher; compare its tile with torch's matmul, and
    the cubin Triton made for the launch with the one the probe compiled for the target."""
    import hashlib

    import torch

    if not torch.cuda.is_available():
        return {"ok": None, "skipped": "no GPU here"}
    torch.manual_seed(0)
    a = torch.randn(_BLOCK, _BLOCK, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(_BLOCK, _BLOCK, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(_BLOCK, _BLOCK, device="cuda", dtype=torch.float32)
    launched = kernel[(1,)](a, b, c, BLOCK=_BLOCK)
    torch.cuda.synchronize()
    ref = a.float() @ b.float()
    err = float((c - ref).norm() / ref.norm())
    same = hashlib.sha256(launched.asm["cubin"]).hexdigest() == hashlib.sha256(compiled.asm["cubin"]).hexdigest()
    return {"ok": err < 1e-2, "rel_error": err, "device": torch.cuda.get_device_name(0), "same_cubin_as_probe": same}


def flashinfer_check(target: str) -> Dict[str, Any]:
    """FlashInfer's JIT for TARGET: is its toolchain here (nvcc, CUDA headers, ninja), and does it compile?

    Its precompiled cubins are read by the static probe with every other GPU file.
    """
    if importlib.util.find_spec("flashinfer") is None:
        return {"installed": False, "ok": False, "error": "flashinfer is not installed"}
    toolchain = _toolchain()
    missing = [k for k in ("nvcc", "cuda_headers", "ninja") if not toolchain[k]]
    if missing:
        return {"installed": True, "toolchain": toolchain, "ok": False, "error": f"no JIT toolchain: {', '.join(missing)} missing"}
    return {"installed": True, "toolchain": toolchain, **_flashinfer_jit(target)}


def _toolchain() -> Dict[str, Optional[str]]:
    site = sysconfig.get_paths()["purelib"]
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or ""
    nvcc = shutil.which("nvcc") or next(iter(sorted(glob.glob(os.path.join(site, "nvidia", "*", "bin", "nvcc")))), None) \
        or (os.path.join(home, "bin", "nvcc") if home and os.path.exists(os.path.join(home, "bin", "nvcc")) else None)
    headers = next(iter(sorted(glob.glob(os.path.join(site, "nvidia", "*", "include", "cuda_runtime.h")))), None) \
        or (os.path.join(home, "include", "cuda_runtime.h") if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")) else None)
    ninja = shutil.which("ninja") or next(iter(glob.glob(os.path.join(os.path.dirname(sys.executable), "ninja"))), None)
    return {"nvcc": nvcc, "cuda_headers": headers, "ninja": ninja}


def _flashinfer_jit(target: str) -> Dict[str, Any]:
    """Compile one FlashInfer JIT module (its RMSNorm) for TARGET, in a scratch cache."""
    arch = _capability(target)
    os.environ["FLASHINFER_CUDA_ARCH_LIST"] = f"{arch // 10}.{arch % 10}{'a' if target.endswith('a') else ''}"
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", tempfile.mkdtemp(prefix=SCRATCH_PREFIXES["flashinfer"]))
    t0 = time.perf_counter()
    try:
        from flashinfer.jit import norm

        spec = norm.gen_norm_module()
        spec.build()
    except Exception as exc:  # noqa: BLE001 - a JIT that cannot compile for the GPU is the finding
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
        return {"ok": False, "error": f"{type(exc).__name__}: {lines[-1][:300]}"}
    built = [c for c in scan_tree(Path(os.environ["FLASHINFER_WORKSPACE_BASE"])) if c.has_gpu_code]
    ok = any(verdict(c, target) == "native" for c in built)
    return {"ok": ok, "module": "norm", "compile_s": round(time.perf_counter() - t0, 1),
            "sass": sorted({a for c in built for a in c.sass}),
            **({} if ok else {"error": f"the module FlashInfer built has no {target} code"})}


def jit_checks(target: str, run: bool = False) -> Dict[str, Any]:
    return {"target": target, "triton": triton_check(target, run), "flashinfer": flashinfer_check(target)}


if __name__ == "__main__":  # a child of the static probe: python -m builder.probe.jit TARGET[,TARGET...] [--run]
    import json

    print(json.dumps({t: jit_checks(t, "--run" in sys.argv[2:]) for t in sys.argv[1].split(",")}))
