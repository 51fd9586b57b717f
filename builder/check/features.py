"""Serving features on a GPU architecture, from evidence, and the settings that follow from it.

Each feature the image's SGLang offers — its attention backends, FlashInfer sampling, CUDA
graphs, custom all-reduce, the radix cache — is available on the target or not, and says
why: the library it runs on and that library's code for the target (the fatbin reader,
checked against cuobjdump), or the JIT probe's compile for the target (Triton, FlashInfer),
or why there is nothing to check. ``derive`` picks the fastest configuration every kernel of
which has proven code for the target; the field report's five flags stay as ``COMPAT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from ..contracts import StaticReply
from ..inputs.profile import COMPAT, Serve
from ..probe.fatbin import verdict
from .gpucode import ImageGpuCode

# Attention backends, fastest first, that derive may choose on NVIDIA GPUs. FlashAttention 3 first: it
# carries SASS for Hopper only, where SGLang itself picks it by default; on sm_120 it never has code.
ATTENTION_PREFERENCE = ("fa3", "flashinfer", "triton", "torch_native")
# Which libraries a precompiled backend runs on (globs under site-packages).
BACKEND_LIBRARIES = {
    "torch_native": ["torch/lib/libtorch_cuda.so"],
    "fa3": ["sgl_kernel/*flash_ops*.so"],
    "dual_chunk_flash_attn": ["sgl_kernel/*flash_ops*.so"],  # FlashAttention 3's kernels, in chunks
    "flashmla": ["sgl_kernel/*flashmla_ops*.so"],
}
# Backends that run FlashInfer's trtllm-gen kernels, which ship only as precompiled cubins.
CUBIN_BACKENDS = ("trtllm_mha", "trtllm_mla")
FLASHINFER_CUBINS = "flashinfer_cubin/*"
NOT_NVIDIA = {"aiter", "wave", "ascend", "intel_amx", "intel_xpu", "cpu"}


@dataclass(frozen=True)
class Feature:
    name: str  # "attention triton", "sampling flashinfer", "cuda graphs", ...
    available: bool | None  # None: no evidence either way
    evidence: str

    @property
    def state(self) -> str:
        return {True: "yes", False: "no", None: "?"}[self.available]


def _library_evidence(code: ImageGpuCode, globs: list[str], arch: str) -> tuple[bool | None, str]:
    hits = code.matching(globs)
    if not hits:
        return None, f"no {' or '.join(globs)} in the image"
    bad = {rel: c for rel, c in hits.items() if verdict(c, arch) != "native"}
    if bad:
        rel, c = sorted(bad.items())[0]
        return False, f"{rel}: {' '.join(c.sass) or 'no SASS'}{' + PTX ' + ' '.join(c.ptx) if c.ptx else ''}, no {arch} SASS"
    rel, c = sorted(hits.items())[0]
    return True, f"{rel}: {arch} SASS" + (f" (and {len(hits) - 1} more)" if len(hits) > 1 else "")


def _jit(reply: StaticReply, arch: str) -> dict:
    """The JIT probe's answer for ARCH ({} when it did not run)."""
    return (reply.jit or {}).get(arch) or {}


def _flashinfer(reply: StaticReply, code: ImageGpuCode, arch: str) -> tuple[bool | None, str]:
    if "flashinfer-python" not in reply.dists:
        return False, "FlashInfer is not installed"
    cubins = code.matching([FLASHINFER_CUBINS])
    ready = [rel for rel, c in cubins.items() if verdict(c, arch) == "native"]
    archs = sorted({a for c in cubins.values() for a in c.sass})
    held = f"{len(cubins)} precompiled cubins ({', '.join(archs) or 'none'})" if cubins else "no precompiled cubins"
    jit = _jit(reply, arch).get("flashinfer") or {}
    if jit.get("ok"):
        return True, f"{held}; its JIT compiles for {arch} ({jit.get('module')} module: {' '.join(jit.get('sass', []))})"
    why = jit.get("error") or "the JIT probe did not run"
    if ready:
        return True, f"{len(ready)} of {held} are for {arch}; JIT: {why}"
    return False, f"{held}, none for {arch}; {why}"


def _flashinfer_cubins(code: ImageGpuCode, arch: str) -> tuple[bool | None, str]:
    cubins = code.matching([FLASHINFER_CUBINS])
    if not cubins:
        return False, "no FlashInfer cubins in the image (trtllm-gen kernels ship only as cubins)"
    ready = sum(verdict(c, arch) == "native" for c in cubins.values())
    archs = ", ".join(sorted({a for c in cubins.values() for a in c.sass}))
    return ready > 0, f"trtllm-gen kernels are FlashInfer cubins: {ready} of {len(cubins)} for {arch} ({archs})"


def _triton(reply: StaticReply, arch: str) -> tuple[bool | None, str]:
    answer = _jit(reply, arch).get("triton")
    if answer is None:
        return None, "the JIT probe did not run"
    if answer.get("ok"):
        return True, (f"Triton {answer.get('triton')} compiles a {answer.get('kernel')} for the target: "
                      f"{' '.join(answer.get('cubin', []))} cubin (PTX .target {answer.get('ptx_target')})")
    return False, f"Triton {answer.get('triton', '')}: {answer.get('error')}".replace("Triton : ", "")


def features(reply: StaticReply, code: ImageGpuCode, arch: str) -> list[Feature]:
    """The feature table for ARCH, from one static probe (with its JIT probe) of the image."""
    options = reply.server_options or {}
    rows: list[Feature] = []
    torch_ok, torch_why = _library_evidence(code, BACKEND_LIBRARIES["torch_native"], arch)
    flashinfer_ok, flashinfer_why = _flashinfer(reply, code, arch)
    for backend in options.get("attention_backend", []):
        if backend in BACKEND_LIBRARIES:
            ok, why = _library_evidence(code, BACKEND_LIBRARIES[backend], arch)
        elif backend == "triton":
            ok, why = _triton(reply, arch)
        elif backend == "flex_attention":  # torch's flex attention is compiled by Triton at run time
            ok, why = _triton(reply, arch)
            ok, why = (ok and torch_ok, f"torch.compile through Triton: {why}") if ok is not None else (ok, why)
        elif backend in CUBIN_BACKENDS:
            ok, why = _flashinfer_cubins(code, arch)
        elif backend == "flashinfer":
            ok, why = flashinfer_ok, flashinfer_why
        elif backend in NOT_NVIDIA:
            ok, why = False, "not an NVIDIA backend"
        else:
            ok, why = None, "sglbuild has no evidence rule for it: never chosen by derive"
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


def derive(rows: list[Feature]) -> Serve:
    """The fastest settings every kernel of which has proven code for the target (by the table)."""
    available = {f.name for f in rows if f.available}
    attention = next((b for b in ATTENTION_PREFERENCE if f"attention {b}" in available), None)
    if attention is None:
        return COMPAT
    return Serve(
        cuda_graph="cuda graphs" in available,
        custom_all_reduce="custom all-reduce" in available,
        flashinfer="sampling flashinfer" in available,
        radix_cache="radix cache" in available,
        attention_backend=attention,
    )
