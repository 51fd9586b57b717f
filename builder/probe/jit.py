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
from typing import Any, Dict, List, Optional

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


def flashinfer_check(targets: List[str]) -> Dict[str, Dict[str, Any]]:
    """FlashInfer's JIT for each of TARGETS: is its toolchain here (nvcc, CUDA headers, ninja, a C++ compiler), and does
    it compile SGLang's decode attention kernel? One build for every target, as FlashInfer builds for several GPUs.

    Its precompiled cubins are read by the static probe with every other GPU file.
    """
    if importlib.util.find_spec("flashinfer") is None:
        return {t: {"installed": False, "ok": False, "error": "flashinfer is not installed"} for t in targets}
    toolchain = _toolchain()
    missing = [k for k in ("nvcc", "cuda_headers", "ninja", "cxx") if not toolchain[k]]
    if missing:
        why = f"no JIT toolchain: {', '.join(missing)} missing"
        return {t: {"installed": True, "toolchain": toolchain, "ok": False, "error": why} for t in targets}
    built = _flashinfer_jit(targets)
    return {t: {"installed": True, "toolchain": toolchain, **built[t]} for t in targets}


def _toolchain() -> Dict[str, Optional[str]]:
    site = sysconfig.get_paths()["purelib"]
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or ""
    nvcc = shutil.which("nvcc") or next(iter(sorted(glob.glob(os.path.join(site, "nvidia", "*", "bin", "nvcc")))), None) \
        or (os.path.join(home, "bin", "nvcc") if home and os.path.exists(os.path.join(home, "bin", "nvcc")) else None)
    headers = next(iter(sorted(glob.glob(os.path.join(site, "nvidia", "*", "include", "cuda_runtime.h")))), None) \
        or (os.path.join(home, "include", "cuda_runtime.h") if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")) else None)
    ninja = shutil.which("ninja") or next(iter(glob.glob(os.path.join(os.path.dirname(sys.executable), "ninja"))), None)
    return {"nvcc": nvcc, "cuda_headers": headers, "ninja": ninja, "cxx": shutil.which(os.environ.get("CXX", "c++")),
            "cuda_home": home or None}


def _flashinfer_arch(target: str) -> str:
    """FLASHINFER_CUDA_ARCH_LIST's spelling of TARGET: 12.0 for sm_120 (FlashInfer adds the suffix it would add for
    that GPU: 120f with CUDA 12.9+, 100a, 121a); an explicit sm_120a stays 12.0a."""
    cap = _capability(target)
    return f"{cap // 10}.{cap % 10}{target[-1] if target[-1] in 'af' else ''}"


def _decode_spec() -> tuple:
    """SGLang's decode attention kernel as FlashInfer JIT-compiles it for a Llama-shaped model (bf16, paged KV, head
    dim 128); FlashInfer releases without that generator compile their RMSNorm instead."""
    try:
        import torch
        from flashinfer.jit.attention.modules import gen_batch_decode_module

        return "batch decode (bf16, paged KV, head dim 128)", gen_batch_decode_module(
            torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.int32, 128, 128, 0, False, False)
    except (ImportError, TypeError):
        from flashinfer.jit import norm

        return "norm", norm.gen_norm_module()


def _flashinfer_jit(targets: List[str]) -> Dict[str, Dict[str, Any]]:
    """Compile one FlashInfer JIT module for TARGETS, in a scratch cache; each target's verdict from the cubins read back."""
    os.environ["FLASHINFER_CUDA_ARCH_LIST"] = " ".join(_flashinfer_arch(t) for t in targets)
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", tempfile.mkdtemp(prefix=SCRATCH_PREFIXES["flashinfer"]))
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    t0 = time.perf_counter()
    try:
        module, spec = _decode_spec()
        spec.build()
    except Exception as exc:  # noqa: BLE001 - a JIT that cannot compile for the GPU is the finding
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
        error = f"{type(exc).__name__}: {lines[-1][:300]}"
        return {t: {"ok": False, "error": error} for t in targets}
    seconds = round(time.perf_counter() - t0, 1)
    built = [c for c in scan_tree(Path(os.environ["FLASHINFER_WORKSPACE_BASE"])) if c.has_gpu_code]
    sass = sorted({a for c in built for a in c.sass})
    answers = {}
    for t in targets:
        ok = any(verdict(c, t) == "native" for c in built)
        answers[t] = {"ok": ok, "module": module, "compile_s": seconds, "sass": sass, "arch_list": os.environ["FLASHINFER_CUDA_ARCH_LIST"],
                      **({} if ok else {"error": f"the module FlashInfer built has no {t} code ({' '.join(sass) or 'none'})"})}
    return answers


def jit_checks(targets: List[str], run: bool = False) -> Dict[str, Dict[str, Any]]:
    """Per target: Triton's compile (and run), FlashInfer's JIT (one build for all)."""
    flashinfer = flashinfer_check(targets)
    return {t: {"target": t, "triton": _answer(triton_check, t, run), "flashinfer": flashinfer[t]} for t in targets}


def _answer(check: Any, *args: Any) -> Dict[str, Any]:
    """CHECK's answer, or why it failed: a Triton that cannot import is a no for Triton, not a probe that said nothing."""
    try:
        return check(*args)
    except Exception as exc:  # noqa: BLE001 - the image's own code, reported
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":  # a child of the static probe: python -m builder.probe.jit TARGET[,TARGET...] [--run]
    import json

    print(json.dumps(jit_checks(sys.argv[1].split(","), "--run" in sys.argv[2:])))
