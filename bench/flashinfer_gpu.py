"""FlashInfer's first call on a GPU: a module built ahead of time against FlashInfer's JIT, side by side.

    python bench/flashinfer_gpu.py SITE MODULE.so [--arch-list 9.0] [--json OUT]

SITE: a directory holding the image's FlashInfer package (flashinfer/); MODULE.so: its batch decode module (bf16, bf16 KV
cache, head dimension 128), built ahead of time by the image's toolchain for this GPU (sglbuild's flashinfer-aot code,
``builder/probe/flashinfer_aot.py build``). Each case runs in a fresh process, so its first call pays what a new server
pays:

- prebuilt: the module under flashinfer/data/aot, FlashInfer's JIT turned off (FLASHINFER_DISABLE_JIT=1): the first
  decode loads it; the output is compared with attention computed in float32 by torch;
- jit: no prebuilt module, an empty JIT cache: the first decode compiles it with this machine's nvcc, then runs;
- missing: no prebuilt module and the JIT off: FlashInfer must refuse (a check that the prebuilt case compiled nothing).

Needs a GPU, torch and FlashInfer's own dependencies; no sglbuild imports (it runs where the GPU is). The image cannot
travel to a GPU machine without a container runtime, so its parts do: MODULE.so made in a container of the image's
toolchain stage (``flashinfer_aot.py build '{"modules":["decode"],"dtype":"bf16","kv_dtypes":["bf16"],"head_dims":[128]}'
sm_90 /tmp/ws``, the same code and nvcc as the flashinfer-aot stage), SITE the image's FlashInfer package unpacked from
its locked wheel (flashinfer/ with data/csrc, data/include, cccl and cutlass's headers: the JIT case compiles from them),
and the image's apache-tvm-ffi version built for the GPU machine's Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAME = ("batch_decode_with_kv_cache_dtype_q_bf16_dtype_kv_bf16_dtype_o_bf16_dtype_idx_i32_head_dim_qk_128_head_dim_vo_128_"
        "posenc_0_use_swa_False_use_logits_cap_False")
BATCH, KV_LEN, PAGE, QO_HEADS, KV_HEADS, HEAD_DIM = 4, 517, 16, 32, 8, 128


def first_decode() -> dict:
    """One batch decode through FlashInfer's wrapper, timed from the import to the synchronised result, and its error
    against float32 attention."""
    t0 = time.perf_counter()
    import torch
    import flashinfer

    t_import = time.perf_counter() - t0
    torch.manual_seed(0)
    dev = "cuda"
    pages_per = (KV_LEN + PAGE - 1) // PAGE
    kv = torch.randn(BATCH * pages_per, 2, PAGE, KV_HEADS, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    q = torch.randn(BATCH, QO_HEADS, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    indptr = torch.arange(0, BATCH + 1, device=dev, dtype=torch.int32) * pages_per
    indices = torch.arange(BATCH * pages_per, device=dev, dtype=torch.int32)
    last = torch.full((BATCH,), KV_LEN - (pages_per - 1) * PAGE, device=dev, dtype=torch.int32)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(torch.empty(128 * 2**20, dtype=torch.uint8, device=dev), "NHD")
    wrapper.plan(indptr, indices, last, QO_HEADS, KV_HEADS, HEAD_DIM, PAGE, pos_encoding_mode="NONE",
                 q_data_type=torch.bfloat16, kv_data_type=torch.bfloat16)
    out = wrapper.run(q, kv)
    torch.cuda.synchronize()
    t_first = time.perf_counter() - t1
    t2 = time.perf_counter()
    out2 = wrapper.run(q, kv)
    torch.cuda.synchronize()
    t_second = time.perf_counter() - t2
    # float32 reference: each request's pages, grouped-query heads
    errs = []
    group = QO_HEADS // KV_HEADS
    for b in range(BATCH):
        pages = kv[b * pages_per:(b + 1) * pages_per].float()
        k = pages[:, 0].reshape(-1, KV_HEADS, HEAD_DIM)[:KV_LEN].repeat_interleave(group, dim=1)
        v = pages[:, 1].reshape(-1, KV_HEADS, HEAD_DIM)[:KV_LEN].repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,nhd->hn", q[b].float(), k) / HEAD_DIM ** 0.5
        ref = torch.einsum("hn,nhd->hd", scores.softmax(-1), v)
        errs.append(((out[b].float() - ref).abs().max() / ref.abs().max()).item())
    return {"import_s": round(t_import, 3), "first_call_s": round(t_first, 4), "second_call_s": round(t_second, 5),
            "max_rel_error": max(errs), "same_twice": bool(torch.equal(out, out2)), "flashinfer": flashinfer.__version__,
            "device": torch.cuda.get_device_name(), "capability": ".".join(map(str, torch.cuda.get_device_capability()))}


def case(site: Path, module: Path | None, jit: bool, arch_list: str) -> dict:
    """first_decode in a fresh process over a fresh copy of SITE's FlashInfer, with MODULE prebuilt (or none)."""
    with tempfile.TemporaryDirectory(prefix="sglbuild-flashinfer-gpu-") as tmp:
        here = Path(tmp) / "site"
        shutil.copytree(site / "flashinfer", here / "flashinfer", symlinks=True)
        if module is not None:
            (here / "flashinfer" / "data" / "aot" / NAME).mkdir(parents=True)
            shutil.copyfile(module, here / "flashinfer" / "data" / "aot" / NAME / f"{NAME}.so")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]),
               "FLASHINFER_WORKSPACE_BASE": str(Path(tmp) / "ws"), "FLASHINFER_CUDA_ARCH_LIST": arch_list}
        env.pop("FLASHINFER_DISABLE_JIT", None)
        if not jit:
            env["FLASHINFER_DISABLE_JIT"] = "1"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child"], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            return {"ok": True, "process_s": round(wall, 2), **json.loads(lines[-1])}
        why = [ln for ln in proc.stderr.splitlines() if "Error" in ln] or proc.stderr.strip().splitlines()[-1:]
        return {"ok": False, "process_s": round(wall, 2), "error": (why[-1] if why else f"exit {proc.returncode}")[:300]}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(first_decode()))
        return 0
    site, module = Path(argv[0]), Path(argv[1])
    arch_list = argv[argv.index("--arch-list") + 1] if "--arch-list" in argv else "9.0"
    results = {"prebuilt": case(site, module, jit=False, arch_list=arch_list),
               "jit": case(site, None, jit=True, arch_list=arch_list),
               "missing": case(site, None, jit=False, arch_list=arch_list)}
    pre, jit = results["prebuilt"], results["jit"]
    if pre["ok"] and jit["ok"]:
        results["first_call_ratio_jit_over_prebuilt"] = round(jit["first_call_s"] / pre["first_call_s"], 1)
    text = json.dumps(results, indent=2)
    print(text)
    if "--json" in argv:
        Path(argv[argv.index("--json") + 1]).write_text(text + "\n")
    # prebuilt must run and match; JIT-off without the module must refuse
    good = pre["ok"] and pre["max_rel_error"] < 2e-2 and not results["missing"]["ok"]
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
