"""SGLang's attention kernels on this machine's GPU, against a float32 torch reference: error and time per call.

    python bench/attention_gpu_bench.py [--head-dims 64,128] [--page-sizes 1,16] [--json FILE] [--sglang-root DIR]

What SGLang's flashinfer backend runs, compiled here by FlashInfer's own JIT (nvcc and the host C++
compiler: CUDA_HOME, CC/CXX pick them), and SGLang's Triton decode kernel, all on the same inputs:

- FlashInfer batch decode, paged KV cache, bf16, backend "fa2" as SGLang sets it, with and without
  tensor cores (SGLang uses them when the GQA group is larger than 4);
- FlashInfer batch prefill, paged KV cache, causal, bf16, backend "fa2";
- SGLang's Triton decode attention (``sglang.kernels.ops.attention.decode_attention``), page size 1.

Each against torch in float32 (GQA expanded by hand): max abs error, relative error, median time per
call (``triton.testing.do_bench``); and each FlashInfer module's first-use compile time. Figures are
for this GPU: they prove the kernels and the toolchain, not another GPU's speed. Standalone: it needs
torch, triton, flashinfer and a CUDA toolkit with a host C++ compiler; SGLang's kernel file is read
from ``--sglang-root`` (the two helpers it imports from sglang.srt are given by a shim when sglang itself
is not installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import types


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()
        return out[-1] if out else "?"
    except OSError:
        return "not found"


def first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()
        return out[0] if out else "?"
    except OSError:
        return "not found"


def sglang_decode_kernel(root: str | None):
    """SGLang's Triton decode attention function, from the installed sglang or from ROOT (a copy of its package)."""
    if root:
        sys.path.insert(0, root)
    try:
        import sglang.srt.utils  # noqa: F401  the real package: nothing to shim
    except ImportError:
        import torch

        class _Env:
            def __getattr__(self, name: str):
                return types.SimpleNamespace(get=lambda: {"SGLANG_FORCE_LEAN_GRID_CU_MULT": 1.0}.get(name, None))

        srt = types.ModuleType("sglang.srt")
        environ = types.ModuleType("sglang.srt.environ")
        environ.envs = _Env()
        utils = types.ModuleType("sglang.srt.utils")
        utils.get_device_core_count = lambda i=0: torch.cuda.get_device_properties(i).multi_processor_count
        utils.is_gfx95_supported = utils.is_gfx1250_supported = utils.is_hip = lambda: False
        sys.modules.update({"sglang.srt": srt, "sglang.srt.environ": environ, "sglang.srt.utils": utils})
    from sglang.kernels.ops.attention.decode_attention import decode_attention_fwd

    return decode_attention_fwd


def paged(lens: list[int], page: int, heads_kv: int, dim: int, gen):
    """A paged KV cache (NHD) holding sequences of LENS, its pages in random order, and its index tensors."""
    import torch

    pages = [math.ceil(n / page) for n in lens]
    total = sum(pages)
    order = torch.randperm(total, generator=gen).cuda().int()
    k = torch.randn(total, page, heads_kv, dim, generator=gen, dtype=torch.float32).cuda().bfloat16()
    v = torch.randn(total, page, heads_kv, dim, generator=gen, dtype=torch.float32).cuda().bfloat16()
    indptr = torch.tensor([0, *[sum(pages[:i + 1]) for i in range(len(pages))]], dtype=torch.int32, device="cuda")
    last = torch.tensor([n - (p - 1) * page for n, p in zip(lens, pages)], dtype=torch.int32, device="cuda")
    return k, v, indptr, order, last


def gather(cache, indptr, order, i: int, n: int):
    """Sequence I's N keys (or values) from the paged cache, in order, as float32."""
    rows = order[indptr[i]:indptr[i + 1]].long()
    return cache[rows].reshape(-1, cache.shape[2], cache.shape[3])[:n].float()


def reference(q, keys, values, causal_from: int | None = None):
    """Attention in float32: Q [n, H, D] against K, V [L, Hkv, D]; causal: query j sees keys up to CAUSAL_FROM + j."""
    import torch

    n, heads, dim = q.shape
    group = heads // keys.shape[1]
    qg = q.float().reshape(n, keys.shape[1], group, dim)
    scores = torch.einsum("nkgd,lkd->nkgl", qg, keys) / math.sqrt(dim)
    if causal_from is not None:
        allowed = torch.arange(keys.shape[0], device=q.device)[None, :] <= (causal_from + torch.arange(n, device=q.device))[:, None]
        scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    return torch.einsum("nkgl,lkd->nkgd", scores.softmax(-1), values).reshape(n, heads, dim)


def errors(out, ref) -> dict:
    import torch

    out = out.float()
    return {"max_abs": float((out - ref).abs().max()), "rel": float((out - ref).norm() / ref.norm()),
            "nan": bool(torch.isnan(out).any())}


def timed(fn) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))


def decode_cases(dim: int, page: int, decode_fwd, gen) -> list[dict]:
    import flashinfer
    import torch

    heads, heads_kv, batch = 32, (8 if dim == 128 else 4), 32
    lens = torch.randint(256, 2049, (batch,), generator=gen).tolist()
    k, v, indptr, order, last = paged(lens, page, heads_kv, dim, gen)
    q = torch.randn(batch, heads, dim, generator=gen, dtype=torch.float32).cuda().bfloat16()
    ref = torch.cat([reference(q[i:i + 1], gather(k, indptr, order, i, n), gather(v, indptr, order, i, n)) for i, n in enumerate(lens)])
    rows = []
    workspace = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for tensor_cores in (False, True):
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=tensor_cores, backend="fa2")
        t0 = time.perf_counter()
        wrapper.plan(indptr, order, last, heads, heads_kv, dim, page, q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
        out = wrapper.run(q, (k, v))
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        rows.append({"kernel": f"flashinfer decode{' (tensor cores)' if tensor_cores else ''}", "head_dim": dim, "page_size": page,
                     "shape": f"{batch} seqs, 256-2048 tokens, {heads}/{heads_kv} heads", **errors(out, ref),
                     "ms": timed(lambda: wrapper.run(q, (k, v))), "first_call_s": round(first, 1)})
    if page == 1:  # SGLang's Triton backend runs page size 1 by default: one token per row, indices are token ids
        o = torch.empty_like(q)
        splits = 8
        logits = torch.empty(batch, heads, splits, dim, dtype=torch.float32, device="cuda")
        lse = torch.empty(batch, heads, splits, dtype=torch.float32, device="cuda")
        num_splits = torch.full((batch,), splits, dtype=torch.int32, device="cuda")
        kb, vb = k.view(-1, heads_kv, dim), v.view(-1, heads_kv, dim)

        def triton_decode():
            decode_fwd(q, kb, vb, o, indptr, order, logits, lse, num_splits, splits, 1 / math.sqrt(dim), 1.0, 1.0)

        t0 = time.perf_counter()
        triton_decode()
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        rows.append({"kernel": "sglang triton decode", "head_dim": dim, "page_size": page,
                     "shape": f"{batch} seqs, 256-2048 tokens, {heads}/{heads_kv} heads", **errors(o, ref),
                     "ms": timed(triton_decode), "first_call_s": round(first, 1)})
    return rows


def prefill_cases(dim: int, page: int, gen) -> list[dict]:
    import flashinfer
    import torch

    heads, heads_kv, batch, new, prefix = 32, (8 if dim == 128 else 4), 8, 512, 512
    lens = [prefix + new] * batch
    k, v, indptr, order, last = paged(lens, page, heads_kv, dim, gen)
    q = torch.randn(batch * new, heads, dim, generator=gen, dtype=torch.float32).cuda().bfloat16()
    qo_indptr = torch.arange(0, batch * new + 1, new, dtype=torch.int32, device="cuda")
    ref = torch.cat([reference(q[i * new:(i + 1) * new], gather(k, indptr, order, i, n), gather(v, indptr, order, i, n), causal_from=prefix)
                     for i, n in enumerate(lens)])
    workspace = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend="fa2")
    t0 = time.perf_counter()
    wrapper.plan(qo_indptr, indptr, order, last, heads, heads_kv, dim, page, causal=True, q_data_type=torch.bfloat16,
                 kv_data_type=torch.bfloat16)
    out = wrapper.run(q, (k, v))
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    return [{"kernel": "flashinfer prefill (causal)", "head_dim": dim, "page_size": page,
             "shape": f"{batch} seqs, {prefix}+{new} tokens, {heads}/{heads_kv} heads", **errors(out, ref),
             "ms": timed(lambda: wrapper.run(q, (k, v))), "first_call_s": round(first, 1)}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dims", default="64,128")
    parser.add_argument("--page-sizes", default="1,16")
    parser.add_argument("--sglang-root", default=None, help="A directory holding sglang/kernels/ops/attention/decode_attention.py")
    parser.add_argument("--json", default=None, help="Write every figure here too.")
    args = parser.parse_args()
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", tempfile.mkdtemp(prefix="attention-bench-"))  # a cold JIT cache
    import flashinfer
    import torch
    import triton

    decode_fwd = sglang_decode_kernel(args.sglang_root)
    props = torch.cuda.get_device_properties(0)
    facts = {"device": props.name, "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda,
             "triton": triton.__version__, "flashinfer": flashinfer.__version__,
             "nvcc": tool_version([os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"), "--version"]),
             "host compiler": first_line([os.environ.get("CXX", "c++"), "--version"])}
    gen = torch.Generator().manual_seed(0)
    rows: list[dict] = []
    for dim in (int(d) for d in args.head_dims.split(",")):
        for page in (int(p) for p in args.page_sizes.split(",")):
            rows += decode_cases(dim, page, decode_fwd, gen)
            rows += prefill_cases(dim, page, gen)
    for r in rows:
        r["ok"] = r["rel"] < 1e-2 and not r["nan"]
    print("  ".join(f"{k} {v}" for k, v in facts.items()))
    print(f"{'kernel':<30} {'hd':>3} {'page':>4}  {'max abs err':>11} {'rel err':>9} {'ms/call':>8} {'1st call s':>10}  shape")
    for r in rows:
        print(f"{r['kernel']:<30} {r['head_dim']:>3} {r['page_size']:>4}  {r['max_abs']:>11.2e} {r['rel']:>9.2e} {r['ms']:>8.4f} "
              f"{r['first_call_s']:>10}  {r['shape']}{'' if r['ok'] else '  FAILED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "rows": rows}, f, indent=2)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
