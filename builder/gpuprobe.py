"""GPU checks: run inside an image on a GPU host, or on any machine with Python and torch.

    python3 -m builder.probe gpu [--target sm_120]

reports the device (name, compute capability, driver), which of the installed GPU
libraries (torch, sgl_kernel) have code for this device, a matmul on the GPU against
the CPU, and sgl_kernel's RMSNorm against a torch reference. The last line is JSON.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import socket
import time
import urllib.request

from .fatbin import arch_key, scan_file, verdict


def _driver_version() -> str | None:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
            return f"CUDA {v.value // 1000}.{v.value % 1000 // 10}"
    except OSError:
        pass
    return None


def gpu_checks(argv: list[str]) -> dict:
    target = argv[argv.index("--target") + 1] if "--target" in argv else None
    import torch

    out: dict = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda, "driver": _driver_version()}
    if not torch.cuda.is_available():
        out["available"] = False
        return out
    props = torch.cuda.get_device_properties(0)
    arch = f"sm_{props.major}{props.minor}"
    out.update(available=True, device=props.name, capability=f"{props.major}.{props.minor}", arch=arch,
               memory_gb=round(props.total_memory / 2**30, 1), image_target=target,
               torch_arch_list=torch._C._cuda_getArchFlags().split())
    # What would and would not run on this card: every GPU library of torch and sgl_kernel.
    roots = [os.path.dirname(torch.__file__)]
    try:
        import importlib.util

        spec = importlib.util.find_spec("sgl_kernel")
        if spec and spec.submodule_search_locations:
            roots += list(spec.submodule_search_locations)
    except (ImportError, ValueError):
        pass
    coverage = []
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "**", "*.so*"), recursive=True)):
            code = scan_file(__import__("pathlib").Path(path))
            if code.has_gpu_code:
                coverage.append({"library": os.path.relpath(path, os.path.dirname(root)), "verdict": verdict(code, arch),
                                 "sass": sorted(code.sass, key=arch_key), "ptx": sorted(code.ptx, key=arch_key)})
    out["coverage"] = coverage
    # A matmul on the GPU against the CPU (float32, TF32 off, fresh random inputs).
    torch.backends.cuda.matmul.allow_tf32 = False
    a, b = torch.randn(1024, 1024, dtype=torch.float64), torch.randn(1024, 1024, dtype=torch.float64)
    ref = a @ b
    t0 = time.perf_counter()
    got = (a.float().cuda() @ b.float().cuda()).double().cpu()
    torch.cuda.synchronize()
    err = float((got - ref).norm() / ref.norm())
    out["matmul"] = {"ok": err < 1e-5, "rel_error": err, "ms": round((time.perf_counter() - t0) * 1000, 2)}
    # sgl_kernel's RMSNorm (the op that failed on RTX 5090 upstream) against torch.
    try:
        import sgl_kernel

        x = torch.randn(64, 4096, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
        ref = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6) * w.float())
        got = sgl_kernel.rmsnorm(x, w, 1e-6).float()
        err = float((got - ref).norm() / ref.norm())
        out["rmsnorm"] = {"ok": err < 1e-2, "rel_error": err}
    except ImportError as exc:
        out["rmsnorm"] = {"ok": None, "skipped": f"sgl_kernel is not importable: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot run is the finding
        out["rmsnorm"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


def run_gpu_checks(client, image_id: str, arch: str, model: str | None, flags: list[str]) -> list:
    """Host side: the probe in the image with --gpus all, then (with a model) a real server."""
    from docker.types import DeviceRequest

    from .archs import run_probe
    from .verify import Check

    checks: list[Check] = []
    gpus = [DeviceRequest(count=-1, capabilities=[["gpu", "compute", "utility"]])]
    info = run_probe(client, image_id, ["gpu", "--target", arch], device_requests=gpus)
    if not info.get("available"):
        return [Check(i, n, "fail", "torch sees no GPU in the container") for i, n in
                (("gpu-device", "GPU device"), ("gpu-compute", "GPU compute"), ("gpu-serve", "GPU serving"))]
    covered = info["arch"] == arch or any(c["verdict"] == "native" and "torch" in c["library"] for c in info["coverage"])
    none = [c["library"] for c in info["coverage"] if c["verdict"] == "none"]
    checks.append(Check("gpu-device", "GPU device", "pass" if covered else "fail",
                        f"{info['device']} (compute {info['capability']}, {info['driver']}); "
                        f"{'covered' if covered else 'NOT covered'} by the image's code for {arch}; no code here: {', '.join(none[:4]) or 'none'}"))
    mm, rms = info["matmul"], info["rmsnorm"]
    ok = mm["ok"] and rms.get("ok") is not False
    checks.append(Check("gpu-compute", "GPU compute", "pass" if ok else "fail",
                        f"matmul rel. error {mm['rel_error']:.1e}; RMSNorm "
                        + (f"rel. error {rms['rel_error']:.1e}" if "rel_error" in rms else rms.get("skipped") or rms.get("error", ""))))
    if model is None:
        checks.append(Check("gpu-serve", "GPU serving", "skip", "no --model given"))
    else:
        checks.append(_serve_check(client, image_id, model, gpus))
    return checks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_check(client, image_id: str, model: str, gpus) -> "object":
    """Start the image's server with its default flags (and the field report's TinyLlama
    settings), ask it the field report's question, report time for 128 tokens and GPU memory."""
    from .errors import SglbuildError
    from .serve import plan, start, wait_healthy
    from .verify import Check

    p = plan(image_id, model, "tinyllama", _free_port())
    container = start(client, p, detach_name=False)
    base = f"http://127.0.0.1:{p.port}"
    try:
        try:
            wait_healthy(container, base)
        except SglbuildError as exc:
            return Check("gpu-serve", "GPU serving", "fail", str(exc))
        body = json.dumps({"text": "The capital of France is",
                           "sampling_params": {"max_new_tokens": 128, "temperature": 0, "ignore_eos": True}}).encode()
        t0 = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(base + "/generate", body, {"Content-Type": "application/json"}), timeout=300) as r:
            answer = json.loads(r.read())
        seconds = time.perf_counter() - t0
        text = (answer.get("text") or "").strip()
        mem = container.exec_run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]).output.decode().split()
        used = f"{int(mem[0]) / 1024:.2f} GB" if mem and mem[0].isdigit() else "unknown"
        return Check("gpu-serve", "GPU serving", "pass" if text else "fail", f"128 tokens in {seconds:.2f} s, GPU memory {used}: {text[:60]!r}")
    finally:
        container.remove(force=True)
