"""FlashInfer's modules ahead of time: which ones a declaration names, building them, and finding them again.

Runs inside the image, with its venv's Python: the build's flashinfer-aot stage runs ``build`` (the build serves it this
file, checked by sha256, so the stage's key follows it), verify's probe runs ``resolve``. Standard library only at
import; torch and flashinfer are the image's own, imported where they are used, so the module names and files are
FlashInfer's own answers, not ours.

A declaration is the target's [flashinfer_aot] as its image's label carries it (``FlashInferAot.to_json``)::

    {"modules": ["decode", "prefill", "page", "sampling"], "dtype": "bf16",
     "kv_dtypes": ["bf16", "fp8_e4m3"], "head_dims": [64, 128, 256]}

Each attention module is the one FlashInfer's wrappers load at run time (``get_batch_decode_module`` and, for the FA2
backend SGLang's flashinfer backend runs on Blackwell, ``get_batch_prefill_module``), with the defaults SGLang passes:
no positional encoding in the kernel (RoPE is applied before), no sliding window, no logits soft cap, int32 indices.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp8_e4m3": "float8_e4m3fn", "fp8_e5m2": "float8_e5m2"}


def arch_list(archs: List[str]) -> str:
    """sm_100,sm_120 as FLASHINFER_CUDA_ARCH_LIST spells them: '10.0 12.0' (the 'a' variants FlashInfer adds itself)."""
    return " ".join(f"{a[3:-1]}.{a[-1]}" for a in archs)


def specs(declared: Dict[str, Any]) -> List[Tuple[str, Any]]:
    """(kind, FlashInfer JitSpec) for each module DECLARED names, in a stable order."""
    import torch
    from flashinfer.jit.attention import modules as attention

    dtype = getattr(torch, _TORCH_DTYPES[declared["dtype"]])
    out: List[Tuple[str, Any]] = []
    for kind in declared["modules"]:
        if kind == "page":
            from flashinfer.jit.page import gen_page_module

            out.append((kind, gen_page_module()))
        elif kind == "sampling":
            from flashinfer.jit.sampling import gen_sampling_module

            out.append((kind, gen_sampling_module()))
        else:
            for kv in declared["kv_dtypes"]:
                for head_dim in declared["head_dims"]:
                    args = (dtype, getattr(torch, _TORCH_DTYPES[kv]), dtype, torch.int32, head_dim, head_dim, 0, False, False)
                    if kind == "decode":
                        out.append((kind, attention.gen_batch_decode_module(*args)))
                    else:  # what flashinfer.prefill.get_batch_prefill_module("fa2", ...) builds and loads
                        out.append((kind, attention._gen_batch_prefill_primary_module("fa2", *args, False)))
    return out


def _seeded_nvcc(workspace: str) -> str:
    """nvcc, each call seeded with the path of the object it writes (the same every build, another for each file).

    nvcc draws the names it gives anonymous namespaces and module IDs from its process ID (tmpxft_<pid>_...), and
    ninja compiles in parallel, so two builds name them differently, in the GPU code too; ``-frandom-seed`` replaces
    that draw. FlashInfer's ninja rule runs $FLASHINFER_NVCC."""
    real = os.path.join(os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda", "bin", "nvcc")
    wrapper = os.path.join(workspace, "nvcc-seeded")
    os.makedirs(workspace, exist_ok=True)
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nprev=; seed=\nfor a in "$@"; do [ "$prev" = -o ] && seed=$a; prev=$a; done\n'
                f'exec {real} ${{seed:+-frandom-seed=$seed}} "$@"\n')
    os.chmod(wrapper, 0o755)
    return wrapper


def _cross_env(triplet: str, sysroot: str) -> None:
    """Compile the host side with Debian's cross compiler for TRIPLET and link against the other platform's CUDA
    runtime, unpacked (its wheel) under SYSROOT; nvcc, the device code's compiler, is this machine's own.

    FlashInfer's ninja file takes the host compiler from $CC (nvcc -ccbin) and $CXX, and extra link flags from
    $FLASHINFER_EXTRA_LDFLAGS, after its own: the linker passes over this platform's libcudart as incompatible."""
    lib = os.path.join(sysroot, "lib")
    os.makedirs(lib, exist_ok=True)
    runtime = sorted(glob.glob(os.path.join(sysroot, "nvidia", "cu*", "lib", "libcudart.so.*")))
    if not runtime:
        raise SystemExit(f"sglbuild: no libcudart.so.* of the other platform under {sysroot}")
    os.symlink(runtime[-1], os.path.join(lib, "libcudart.so"))
    # libcuda.so is the driver's, mounted at run time: an empty library of its name to link against, as cuda_home's stub
    subprocess.run([f"{triplet}-gcc", "-shared", "-nostdlib", "-x", "c", "/dev/null", "-Wl,-soname,libcuda.so.1",
                    "-o", os.path.join(lib, "libcuda.so")], check=True)
    os.environ.update({"CC": f"{triplet}-g++", "CXX": f"{triplet}-g++", "FLASHINFER_EXTRA_LDFLAGS": f"-L{lib}"})


def build(declared: Dict[str, Any], archs: List[str], workspace: str, cross: Optional[Tuple[str, str, str]] = None) -> List[str]:
    """Compile the declared modules for ARCHS in WORKSPACE and put each where the image's FlashInfer looks first
    (flashinfer/data/aot/NAME/NAME.so). Returns the modules' names.

    CROSS (triplet, sysroot, out): for another platform, with that platform's host compiler, each module put under
    OUT/NAME/NAME.so instead (that platform's image unpacks them into its own FlashInfer's directory)."""
    os.environ["FLASHINFER_CUDA_ARCH_LIST"] = arch_list(archs)
    os.environ["FLASHINFER_WORKSPACE_BASE"] = workspace
    os.environ["FLASHINFER_NVCC"] = _seeded_nvcc(workspace)
    strip = "strip"
    if cross is not None:
        _cross_env(cross[0], cross[1])
        strip = f"{cross[0]}-strip"
    from flashinfer.jit import build_jit_specs, env

    todo = [spec for _, spec in specs(declared)]
    build_jit_specs(todo, verbose=False, skip_prebuilt=False)
    for spec in todo:
        root = env.FLASHINFER_AOT_DIR if cross is None else Path(cross[2])
        dest = root / spec.name / f"{spec.name}.so"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec.jit_library_path, dest)
        # nvcc names each translation unit's host stub after its own process ID (tmpxft_<pid>_...), and ninja compiles
        # in parallel: those names reach only the local symbol table. Without it the module is the same bytes every
        # build; the dynamic symbols FlashInfer loads and the GPU code (.nv_fatbin) are untouched.
        subprocess.run([strip, "--strip-unneeded", str(dest)], check=True)
    return [spec.name for spec in todo]


def resolve(declared: Dict[str, Any], archs: List[str]) -> List[Dict[str, Any]]:
    """Per declared module, what the image's FlashInfer loads with its JIT turned off: the prebuilt file, or none.
    ARCHS: the GPUs asked about (FlashInfer's generators need targets, and a machine without a GPU has none)."""
    os.environ["FLASHINFER_DISABLE_JIT"] = "1"
    os.environ["FLASHINFER_CUDA_ARCH_LIST"] = arch_list(archs)
    answers = []
    for kind, spec in specs(declared):
        path = str(spec.aot_path) if spec.is_aot and spec.aot_path.is_file() else None
        answers.append({"kind": kind, "name": spec.name, "path": path})
    return answers


def main(argv: List[str]) -> int:
    """build DECLARED_JSON ARCHS WORKSPACE [--cross TRIPLET SYSROOT OUT] | resolve DECLARED_JSON ARCHS: the last line
    printed is JSON."""
    command, declared = argv[0], json.loads(argv[1])
    if command == "build":
        cross = (argv[5], argv[6], argv[7]) if argv[4:5] == ["--cross"] else None
        names = build(declared, argv[2].split(","), argv[3], cross)
        print(json.dumps({"built": names}))
    else:
        print(json.dumps(resolve(declared, argv[2].split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
