"""Serving features on a GPU architecture, from evidence, and the settings that follow from it.

Each feature the image's SGLang offers — its attention backends, FlashInfer sampling, CUDA
graphs, custom all-reduce, the radix cache — is available on the target or not, and says
why: the library it runs on and that library's code for the target (the fatbin reader,
checked against cuobjdump), or the JIT probe's compile for the target (Triton, FlashInfer),
or why there is nothing to check. ``derive`` picks the fastest configuration every kernel of
which has proven code for the target; the field report's five flags stay as ``COMPAT``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from ..contracts import JitAnswer, StaticReply
from ..inputs.profile import COMPAT, Serve
from ..probe.fatbin import verdict
from .gpucode import ImageGpuCode
from .report import Feature

# Attention backends, fastest first, that derive may choose on NVIDIA GPUs when SGLang's own pick for the GPU is not
# proven. FlashAttention 3 first: it carries SASS for Hopper only, where SGLang itself picks it by default.
ATTENTION_PREFERENCE = ("fa3", "flashinfer", "triton", "torch_native")
# Which libraries a precompiled backend runs on (globs under site-packages).
BACKEND_LIBRARIES = {
    "torch_native": ["torch/lib/libtorch_cuda.so"],
    "fa3": ["sgl_kernel/*flash_ops*.so"],
    "dual_chunk_flash_attn": ["sgl_kernel/*flash_ops*.so"],  # FlashAttention 3's kernels, in chunks
    "minicpm_flashattn": ["sgl_kernel/*flash_ops*.so"],  # MiniCPM's sparse attention over FlashAttention 3
    "flashmla": ["sgl_kernel/*flashmla_ops*.so", "flash_mla/*.so"],  # in sgl_kernel until 0.3, sgl-flash-mla since
}
# Backends that run on FlashInfer's kernels as the flashinfer backend does (its JIT, or its cubins).
FLASHINFER_BACKENDS = ("flashinfer", "minicpm_flashinfer", "llada2_cfg_flashinfer")
FLASHINFER_CUBINS = "flashinfer_cubin/*"
NOT_NVIDIA = {"aiter", "wave", "ascend", "intel_amx", "intel_xpu", "cpu"}
# Model-specific backends: SGLang selects them for one model family, on kernels of their own (DeepSeek's sparse
# attention over FlashMLA and TileLang, DeepSeek V4's compressed attention). What they run on depends on the model.
MODEL_SPECIFIC = {"dsa": "DeepSeek V3.2's sparse attention", "nsa": "DeepSeek V3.2's sparse attention (old name of dsa)",
                  "qsa": "Qwen's sparse attention", "dsv4": "DeepSeek V4's compressed attention",
                  "compressed": "DeepSeek V4's compressed attention (old name of dsv4)"}


def _major(arch: str) -> int:
    return int("".join(c for c in arch if c.isdigit())) // 10




def _library_evidence(code: ImageGpuCode, globs: list[str], arch: str) -> tuple[bool | None, str]:
    hits = code.matching(globs)
    if not hits:  # the backend's library is not installed: nothing to run
        return False, f"no {' or '.join(globs)} in the image"
    bad = {rel: c for rel, c in hits.items() if verdict(c, arch) != "native"}
    if bad:
        rel, c = sorted(bad.items())[0]
        return False, f"{rel}: {' '.join(c.sass) or 'no SASS'}{' + PTX ' + ' '.join(c.ptx) if c.ptx else ''}, no {arch} SASS"
    rel, c = sorted(hits.items())[0]
    return True, f"{rel}: {arch} SASS" + (f" (and {len(hits) - 1} more)" if len(hits) > 1 else "")


def _jit(reply: StaticReply, arch: str) -> JitAnswer | None:
    """The JIT probe's answer for ARCH (None when it did not run)."""
    return (reply.jit or {}).get(arch)


def _where(reply: StaticReply, arch: str) -> str:
    """Where the JIT probe compiled, when not in this image: the build's evidence stage, same files (check.evidence)."""
    answer = _jit(reply, arch)
    image = answer.compiled_in if answer else None
    return f" [compiled in the build's evidence stage {image[:19]}, the same files]" if image else ""


def _flashinfer(reply: StaticReply, code: ImageGpuCode, arch: str) -> tuple[bool | None, str]:
    if "flashinfer-python" not in reply.dists:
        return False, "FlashInfer is not installed"
    cubins = code.matching([FLASHINFER_CUBINS])
    ready = [rel for rel, c in cubins.items() if verdict(c, arch) == "native"]
    archs = sorted({a for c in cubins.values() for a in c.sass})
    held = f"{len(cubins)} precompiled cubins ({', '.join(archs) or 'none'})" if cubins else "no precompiled cubins"
    answer = _jit(reply, arch)
    jit = answer.flashinfer if answer else None
    if jit is not None and jit.ok:
        return True, f"{held}; its JIT compiles for {arch} ({jit.module} module: {' '.join(jit.sass)}){_where(reply, arch)}"
    why = f"{(jit.error if jit else None) or 'the JIT probe did not run'}{_where(reply, arch)}"
    if ready:
        return True, f"{len(ready)} of {held} are for {arch}; JIT: {why}"
    return False, f"{held}, none for {arch}; {why}"


def _flashinfer_cubins(code: ImageGpuCode, arch: str, what: str) -> tuple[bool | None, str]:
    """WHAT runs FlashInfer's trtllm-gen kernels, which ship only as precompiled cubins (the flashinfer-cubin wheel)."""
    cubins = code.matching([FLASHINFER_CUBINS])
    if not cubins:
        return False, (f"{what} on {arch} runs trtllm-gen kernels, which ship only as cubins: the image has no flashinfer-cubin "
                       "(FlashInfer downloads them at first use, which a server without the network cannot)")
    ready = sum(verdict(c, arch) == "native" for c in cubins.values())
    archs = ", ".join(sorted({a for c in cubins.values() for a in c.sass}))
    return ready > 0, f"{what} on {arch} runs trtllm-gen kernels, FlashInfer cubins: {ready} of {len(cubins)} for {arch} ({archs})"


def _flashinfer_jit_backend(flashinfer: tuple[bool | None, str], arch: str, what: str) -> tuple[bool | None, str]:
    """WHAT on ARCH runs kernels FlashInfer compiles at first use (XQA and fmha_v2): its JIT toolchain's evidence."""
    ok, why = flashinfer
    return ok, f"{what} on {arch} is JIT-compiled by FlashInfer: {why}"


def _trtllm_mha(reply: StaticReply, code: ImageGpuCode, arch: str, flashinfer: tuple[bool | None, str]) -> tuple[bool | None, str]:
    # SGLang's trtllm_mha backend: XQA decode and fmha_v2 prefill on SM90 and SM12x (both FlashInfer JIT modules),
    # trtllm-gen decode and context kernels on SM100/SM103/SM110 (cubins).
    if "flashinfer-python" not in reply.dists:
        return False, "FlashInfer is not installed"
    if _major(arch) in (9, 12):
        return _flashinfer_jit_backend(flashinfer, arch, "XQA decode and fmha_v2 prefill")
    if _major(arch) in (10, 11):
        return _flashinfer_cubins(code, arch, "trtllm_mha")
    return False, f"trtllm_mha runs on SM90, SM100-SM110 and SM12x, not {arch}"


def _trtllm_mla(reply: StaticReply, code: ImageGpuCode, arch: str, flashinfer: tuple[bool | None, str]) -> tuple[bool | None, str]:
    # XQA's MLA kernel (a FlashInfer JIT module for SM12x only) on SM12x; trtllm-gen's MLA cubins on SM100.
    if "flashinfer-python" not in reply.dists:
        return False, "FlashInfer is not installed"
    if _major(arch) == 12:
        return _flashinfer_jit_backend(flashinfer, arch, "XQA MLA decode")
    if _major(arch) in (10, 11):
        return _flashinfer_cubins(code, arch, "trtllm_mla")
    return False, f"trtllm_mla runs on SM100 and SM12x, not {arch}"


def _cute_dsl(reply: StaticReply, arch: str, dist: str, what: str, majors: tuple[int, ...]) -> tuple[bool | None, str]:
    """A backend of CuTe DSL kernels (compiled from Python at first use by nvidia-cutlass-dsl, for the GPU it finds)."""
    if dist not in reply.dists:
        return False, f"{dist} is not installed"
    if _major(arch) not in majors:
        return False, f"{what} has kernels for SM{'/SM'.join(str(m) + 'x' for m in majors)}, not {arch}"
    dsl = reply.dists.get("nvidia-cutlass-dsl", "absent")
    return None, (f"{what} ({dist} {reply.dists[dist]}) is CuTe DSL compiled at first use (nvidia-cutlass-dsl {dsl}): "
                  "its compiler asks the GPU, so there is no evidence without one")


def _triton(reply: StaticReply, arch: str) -> tuple[bool | None, str]:
    jit = _jit(reply, arch)
    if jit is None:
        return None, "the JIT probe did not run"
    answer = jit.triton
    if answer.ok:
        return True, (f"Triton {answer.triton} compiles a {answer.kernel} for the target: "
                      f"{' '.join(answer.cubin)} cubin (PTX .target {answer.ptx_target}){_where(reply, arch)}")
    return False, f"Triton {answer.triton}: {answer.error}{_where(reply, arch)}".replace("Triton : ", "")


def attention_evidence(reply: StaticReply, code: ImageGpuCode, arch: str, backend: str,
                       torch: tuple[bool | None, str], flashinfer: tuple[bool | None, str]) -> tuple[bool | None, str]:
    """Whether attention BACKEND runs on ARCH, and why: each rule follows what the locked SGLang runs for it."""
    if backend in NOT_NVIDIA:
        return False, "not an NVIDIA backend"
    if backend in ("fa3", "minicpm_flashattn", "dual_chunk_flash_attn") and _major(arch) not in (8, 9):
        ok, why = _library_evidence(code, BACKEND_LIBRARIES[backend], arch)
        return False, f"FlashAttention 3 is for SM8x/SM90 (SGLang refuses fa3 elsewhere): {why}"
    if backend in BACKEND_LIBRARIES:
        return _library_evidence(code, BACKEND_LIBRARIES[backend], arch)
    if backend == "triton":
        return _triton(reply, arch)
    if backend == "flex_attention":  # torch's flex attention is compiled by Triton at run time
        ok, why = _triton(reply, arch)
        return (ok and torch[0], f"torch.compile through Triton: {why}") if ok is not None else (ok, why)
    if backend in FLASHINFER_BACKENDS:
        return flashinfer
    if backend == "trtllm_mha":
        return _trtllm_mha(reply, code, arch, flashinfer)
    if backend == "trtllm_mla":
        return _trtllm_mla(reply, code, arch, flashinfer)
    if backend == "fa4":
        return _cute_dsl(reply, arch, "flash-attn-4", "FlashAttention 4", (9, 10, 11, 12))
    if backend in ("cutedsl_mla", "tokenspeed_mla"):
        return _cute_dsl(reply, arch, "flash-attn-4", "the CuTe DSL MLA kernels", (10,))
    if backend == "cutlass_mla":  # sgl_kernel's CUTLASS MLA decode, built for SM100 only
        if _major(arch) != 10:
            return False, f"sgl_kernel's CUTLASS MLA kernels are for SM100, not {arch}"
        return _library_evidence(code, ["sgl_kernel/*/common_ops*.so", "sgl_kernel/common_ops*.so"], arch)
    if backend == "hpc_ops":
        if "hpc-ops" not in reply.dists:
            return False, "HPC-Ops (Hopper only) is not installed"
        return (None, "HPC-Ops is for Hopper (SM90)") if _major(arch) == 9 else (False, f"HPC-Ops is for Hopper (SM90), not {arch}")
    if backend in MODEL_SPECIFIC:
        return None, f"{MODEL_SPECIFIC[backend]}: SGLang selects it for that model family, on kernels of its own; not judged"
    return None, "sglbuild has no evidence rule for it: never chosen by derive"


def features(reply: StaticReply, code: ImageGpuCode, arch: str) -> list[Feature]:
    """The feature table for ARCH, from one static probe (with its JIT probe) of the image."""
    options = reply.server_options or {}
    rows: list[Feature] = []
    torch = _library_evidence(code, BACKEND_LIBRARIES["torch_native"], arch)
    torch_ok, torch_why = torch
    flashinfer = _flashinfer(reply, code, arch)
    flashinfer_ok, flashinfer_why = flashinfer
    for backend in options.get("attention_backend", []):
        ok, why = attention_evidence(reply, code, arch, backend, torch, flashinfer)
        rows.append(Feature(f"attention {backend}", ok, why))
    for backend in options.get("sampling_backend", []):
        if backend == "flashinfer":
            rows.append(Feature("sampling flashinfer", flashinfer_ok, flashinfer_why))
        elif backend == "pytorch":
            rows.append(Feature("sampling pytorch", torch_ok, torch_why))
    switches = options.get("switches", [])
    if "--disable-cuda-graph" in switches:
        rows.append(Feature("cuda graphs", torch_ok, f"captured by torch ({torch_why}); replays the kernels chosen above"))
    if "--disable-radix-cache" in switches:
        rows.append(Feature("radix cache", True, "scheduler-side prefix sharing: no GPU code of its own"))
    if "--disable-custom-all-reduce" in switches:
        rows.append(_custom_all_reduce(code, arch))
    return rows


def _custom_all_reduce(code: ImageGpuCode, arch: str) -> Feature:
    mscclpp = code.matching(["sgl_kernel/*mscclpp*.so*"])
    jit_only = sorted(PurePosixPath(r).name for r, c in mscclpp.items() if verdict(c, arch) == "ptx-jit")
    note = f"; mscclpp has PTX only for {arch} ({', '.join(jit_only)})" if jit_only else ""
    if arch == "sm_121":  # GB10: one GPU per machine; machines linked by network all-reduce through NCCL
        return Feature("custom all-reduce", False, "GB10 (DGX Spark) is one GPU per machine: no peer GPU to all-reduce "
                       "with; between machines NCCL does it" + note)
    if arch.startswith("sm_12"):  # the GPUs of this capability are PCIe cards without peer links
        return Feature("custom all-reduce", False, "needs NVLink peer-to-peer; RTX 5090 and RTX PRO 6000 are PCIe-only "
                       "(upstream #25649), and one GPU needs no all-reduce" + note)
    ok, why = _library_evidence(code, ["sgl_kernel/*/common_ops*.so"], arch)
    return Feature("custom all-reduce", ok, f"sgl_kernel's all-reduce kernels: {why}{note}")


def on_every(tables: dict[str, list[Feature]]) -> list[Feature]:
    """One table for an image that must serve several architectures: a feature is available only where it is on every one."""
    archs = list(tables)
    first = tables[archs[0]]
    out = []
    for i, feature in enumerate(first):
        rows = {arch: next((f for f in tables[arch] if f.name == feature.name), None) for arch in archs}
        states = [r.available if r is not None else None for r in rows.values()]
        available = False if False in states else None if None in states else True
        evidence = feature.evidence if len(archs) == 1 else "; ".join(f"{a}: {r.evidence if r else 'not offered'}" for a, r in rows.items())
        out.append(Feature(feature.name, available, evidence))
    return out


def sglang_default(reply: StaticReply, archs: list[str] | tuple[str, ...]) -> str | None:
    """The attention backend the image's SGLang itself picks on every one of ARCHS, when they agree (None otherwise)."""
    picks = {(reply.defaults or {}).get(arch, {}).get("attention_backend") for arch in archs}
    return picks.pop() if len(picks) == 1 else None


def derive(rows: list[Feature], sglang_pick: str | None = None) -> Serve:
    """The fastest settings every kernel of which has proven code for the target (by the table): SGLang's own pick for
    the GPU (SGLANG_PICK) where the evidence proves it, else the fastest proven of ATTENTION_PREFERENCE."""
    available = {f.name for f in rows if f.available}
    preference = ((sglang_pick,) if sglang_pick else ()) + ATTENTION_PREFERENCE
    attention = next((b for b in preference if f"attention {b}" in available), None)
    if attention is None:
        return COMPAT
    return Serve(
        cuda_graph="cuda graphs" in available,
        custom_all_reduce="custom all-reduce" in available,
        flashinfer="sampling flashinfer" in available,
        radix_cache="radix cache" in available,
        attention_backend=attention,
    )
