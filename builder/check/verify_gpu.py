"""verify's GPU checks, host side: the GPU probe in the image with every GPU, then (with a model) a real server.

The probe's own half runs inside the image (:mod:`builder.probe.gpu`); :func:`checks_from_reply`
turns its answer into checks, and is what the GPU machine's tests hold against a real GPU.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import TYPE_CHECKING

from ..contracts import GpuReply
from ..errors import SglbuildError
from .report import Check
from .server import server_container, start, wait_healthy

if TYPE_CHECKING:
    from ..engine import Engine

NAMES = (("gpu-device", "GPU device"), ("gpu-compute", "GPU compute"), ("gpu-serve", "GPU serving"))


def gpu_checks(engine: Engine, image_id: str, archs: list[str], model: str | None) -> list[Check]:
    reply = GpuReply.from_dict(engine.containers.probe(image_id, ["gpu", "--target", archs[0]], gpus=True))
    checks = checks_from_reply(reply, archs)
    if len(checks) < len(NAMES):
        checks.append(Check("gpu-serve", "GPU serving", "skip", "no --model given") if model is None else _serve_check(engine, image_id, model))
    return checks


def checks_from_reply(info: GpuReply, archs: list[str]) -> list[Check]:
    """The device and compute checks from the GPU probe's answer: the device must be one of ARCHS (or run the
    image's torch natively), the matmul and RMSNorm must agree with their references."""
    if not info.available:
        return [Check(i, n, "fail", "torch sees no GPU in the container", "check the driver and the NVIDIA Container Toolkit")
                for i, n in NAMES]
    covered = info.arch in archs or any(c["verdict"] == "native" and "torch" in c["library"] for c in info.coverage)
    none = [c["library"] for c in info.coverage if c["verdict"] == "none"]
    checks = [Check("gpu-device", "GPU device", "pass" if covered else "fail",
                    f"{info.device} (compute {info.capability}, {info.driver}); "
                    f"{'covered' if covered else 'NOT covered'} by the image's code for {', '.join(archs)}; "
                    f"no code here: {', '.join(none[:4]) or 'none'}", "" if covered else f"use an image built for {info.arch}")]
    mm, rms = info.matmul or {}, info.rmsnorm or {}
    ok = bool(mm.get("ok")) and rms.get("ok") is not False
    checks.append(Check("gpu-compute", "GPU compute", "pass" if ok else "fail",
                        f"matmul rel. error {mm.get('rel_error', float('nan')):.1e}; RMSNorm "
                        + (f"rel. error {rms['rel_error']:.1e}" if "rel_error" in rms else rms.get("skipped") or rms.get("error", ""))))
    return checks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_check(engine: Engine, image_id: str, model: str) -> Check:
    """Start the image's server with its default flags (and the field report's TinyLlama
    settings), ask it the field report's question, report time for 128 tokens and GPU memory."""
    image = engine.images.get(image_id)
    server = server_container(image_id, image.config, image.labels, model, "tinyllama", _free_port(), name=None)
    container = start(engine, server)
    try:
        try:
            wait_healthy(engine, container, server)
        except SglbuildError as exc:
            return Check("gpu-serve", "GPU serving", "fail", str(exc))
        body = json.dumps({"text": "The capital of France is",
                           "sampling_params": {"max_new_tokens": 128, "temperature": 0, "ignore_eos": True}}).encode()
        t0 = time.perf_counter()
        req = urllib.request.Request(server.url + "/generate", body, {"Content-Type": "application/json", **server.auth_header})
        with urllib.request.urlopen(req, timeout=300) as r:
            answer = json.loads(r.read())
        seconds = time.perf_counter() - t0
        text = (answer.get("text") or "").strip()
        _, out = engine.containers.exec(container, ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        mem = out.split()
        used = f"{int(mem[0]) / 1024:.2f} GB" if mem and mem[0].isdigit() else "unknown"
        return Check("gpu-serve", "GPU serving", "pass" if text else "fail", f"128 tokens in {seconds:.2f} s, GPU memory {used}: {text[:60]!r}")
    finally:
        engine.containers.remove(container)
