"""``sglbuild verify``: prove an image can serve on its GPU architecture before its tag is trusted.

Static checks run inside the image (the probe, :mod:`builder.probe`) without network and
need no GPU: pins, GPU code per library, shared libraries, serving flags, environment.
GPU checks (:mod:`builder.verify_gpu`) run when the engine has NVIDIA's runtime. Each check
passes, fails or is skipped with a reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from .contracts import LABEL_GPU_ARCH, LABEL_LOCK_DIGEST, LABEL_REQUIRE_NATIVE, LABEL_SERVE_FLAGS, LABEL_TARGET, TOOLS, GpuCode, StaticReply
from .errors import InputError, LockError, ProfileError
from .lock import Lock, parse_lock
from .probe.fatbin import arch_key, verdict
from .report import Report

if TYPE_CHECKING:
    from .engine import Engine
    from .profile import Profile

# Libraries provided by the NVIDIA container runtime on a GPU host, not by the image.
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"}
# Which libraries a serving feature runs on; JIT-compiled backends have none to check.
ATTENTION_LIBS = {
    "fa3": ["sgl_kernel/*flash_ops*.so"],
    "flashmla": ["sgl_kernel/*flashmla_ops*.so"],
    "torch_native": ["torch/lib/libtorch_cuda.so"],
}
CUSTOM_ALL_REDUCE_LIBS = ["sgl_kernel/*mscclpp*.so*", "sgl_kernel/*/common_ops*.so"]


def _relative(path: str, site_packages: list[str]) -> str:
    for sp in site_packages:
        if path.startswith(sp.rstrip("/") + "/"):
            return path[len(sp.rstrip("/")) + 1:]
    return path


def _matching(libs: dict[str, GpuCode], globs: list[str]) -> dict[str, GpuCode]:
    return {rel: c for rel, c in libs.items() if any(fnmatch.fnmatch(rel, g) for g in globs)}


def repository_lock(profile: Profile | None, labels: dict[str, str]) -> Lock | None:
    """The repository's current lock for the image's target, to report drift (None if there is none)."""
    if profile is None:
        return None
    try:
        from .lock import read_lock

        return read_lock(profile, profile.target(labels.get(LABEL_TARGET)))
    except (ProfileError, LockError):
        return None


def verify(engine: Engine, image_ref: str, *, target_arch: str | None = None, gpu: str = "auto",
           model: str | None = None, repo_lock: Lock | None = None) -> Report:
    started = time.monotonic()
    image = engine.images.get(image_ref)
    labels = image.labels or {}
    arch = target_arch or labels.get(LABEL_GPU_ARCH)
    if not arch:
        raise InputError(f"{image_ref} has no {LABEL_GPU_ARCH} label", "pass --arch, e.g. --arch sm_120")
    report = Report(image_ref, image.id, arch)
    flags = json.loads(labels.get(LABEL_SERVE_FLAGS, "[]") or "[]")
    data = StaticReply.from_dict(engine.containers.probe(image.id, ["static", json.dumps(flags)] if flags else ["static"]))
    libs = {_relative(c.path, data.site_packages): c for c in data.libraries}
    _check_pins(report, data, labels, repo_lock)
    _check_gpu_code(report, libs, json.loads(labels.get(LABEL_REQUIRE_NATIVE, "[]") or "[]"), arch)
    _check_shared_libs(report, data)
    _check_flags(report, data, flags, libs, arch)
    _check_environment(report, data)
    _gpu_checks(report, engine, image.id, gpu, model, arch)
    report.seconds = time.monotonic() - started
    return report


def _check_pins(report: Report, data: StaticReply, labels: dict, repo_lock: Lock | None) -> None:
    if data.lock is None:
        report.add("pins", "pins", "fail", "the image carries no lock (/usr/share/sglbuild/lock.json): not built by sglbuild")
        return
    digest = "sha256:" + hashlib.sha256(data.lock.encode()).hexdigest()
    if labels.get(LABEL_LOCK_DIGEST) != digest:
        report.add("pins", "pins", "fail", f"the lock inside ({digest[:19]}) is not the one the labels name ({labels.get(LABEL_LOCK_DIGEST)})")
        return
    lock = parse_lock(data.lock, "lock in image")
    dists = data.dists
    wrong = [f"{w.name} {dists.get(w.name, 'absent')} (lock {w.version})" for w in lock.wheels
             if w.stage != TOOLS and dists.get(w.name) != w.version]
    if wrong:
        report.add("pins", "pins", "fail", f"{len(wrong)} installed versions differ from the lock: {'; '.join(wrong[:4])}")
        return
    torch = data.imports["torch"].value if data.imports.get("torch") and data.imports["torch"].ok else {}
    key = [f"{n} {dists[n]}" for n in ("torch", "sgl-kernel", "sglang") if n in dists]
    if torch.get("cuda"):
        key.insert(1, f"CUDA {torch['cuda']}")
    detail = f"{len(lock.wheels)} wheels as locked ({digest[:19]}): {', '.join(key)}"
    if repo_lock is not None and repo_lock.digest != digest.split(":")[1]:
        theirs = {w.name: w.version for w in repo_lock.wheels}
        moved = [f"{w.name} {w.version}->{theirs.get(w.name, 'removed')}" for w in lock.wheels if theirs.get(w.name) != w.version]
        detail += f"; drift from the repository's lock: {', '.join(moved[:5]) or 'same pins, other hashes or base'}"
    report.add("pins", "pins", "pass", detail)


def _check_gpu_code(report: Report, libs: dict[str, GpuCode], required: list[str], arch: str) -> None:
    verdicts = {rel: verdict(c, arch) for rel, c in libs.items()}
    counts = {v: sum(x == v for x in verdicts.values()) for v in ("native", "ptx-jit", "none")}
    none = sorted(rel for rel, v in verdicts.items() if v == "none")
    summary = f"{len(libs)} libraries with GPU code: {counts['native']} native, {counts['ptx-jit']} via PTX JIT, {counts['none']} none"
    if none:
        summary += f" ({', '.join(PurePosixPath(n).name for n in none[:6])}{' ...' if len(none) > 6 else ''})"
    problems = []
    for glob in required:
        hits = _matching(libs, [glob])
        if not hits:
            problems.append(f"{glob}: no library with GPU code matches")
        for rel, c in sorted(hits.items()):
            if verdicts[rel] != "native":
                have = " ".join(sorted(c.sass, key=arch_key)) or "no SASS"
                problems.append(f"{rel} has no {arch} SASS ({have})")
    if problems:
        report.add("gpu-code", "GPU code", "fail", f"{'; '.join(problems[:4])}; {summary}")
    else:
        report.add("gpu-code", "GPU code", "pass", summary)


def _check_shared_libs(report: Report, data: StaticReply) -> None:
    missing = data.ldd_missing
    if missing is None:
        report.add("shared-libs", "shared libraries", "skip", "the image has no ldd")
        return
    broken = {p: [m for m in ms if m not in DRIVER_LIBS] for p, ms in missing.items()}
    broken = {p: ms for p, ms in broken.items() if ms}
    runtime = sorted({m for ms in missing.values() for m in ms if m in DRIVER_LIBS})
    if broken:
        path, libs = sorted(broken.items())[0]
        report.add("shared-libs", "shared libraries", "fail",
                   f"{', '.join(libs)} not found for {_relative(path, data.site_packages)}"
                   + (f" and {len(broken) - 1} more libraries" if len(broken) > 1 else ""))
    else:
        note = f"; {', '.join(runtime)} provided at run time by the NVIDIA container runtime" if runtime else ""
        report.add("shared-libs", "shared libraries", "pass", f"{len(missing)} GPU libraries resolve{note}")


def _check_flags(report: Report, data: StaticReply, flags: list[str], libs: dict[str, GpuCode], arch: str) -> None:
    if not flags:
        report.add("serve-flags", "serving flags", "skip", "the image declares no default server flags")
        return
    parsed = data.flags
    if parsed is None or not parsed.ok:
        report.add("serve-flags", "serving flags", "fail", f"the image's SGLang rejects its default flags: {parsed.error if parsed else 'not parsed'}")
        return
    args = parsed.value
    problems = []
    backend = args.get("attention_backend")
    for rel, c in _matching(libs, ATTENTION_LIBS.get(backend or "", [])).items():
        if verdict(c, arch) == "none":
            problems.append(f"--attention-backend {backend} runs on {rel}, which has no code for {arch}")
    if not args.get("disable_custom_all_reduce"):
        for rel, c in _matching(libs, CUSTOM_ALL_REDUCE_LIBS).items():
            if verdict(c, arch) == "none":
                problems.append(f"custom all-reduce is on but {rel} has no code for {arch} (add --disable-custom-all-reduce)")
    if problems:
        report.add("serve-flags", "serving flags", "fail", "; ".join(problems[:3]))
    else:
        report.add("serve-flags", "serving flags", "pass", f"accepted by the image's SGLang: {' '.join(flags)}")


def _check_environment(report: Report, data: StaticReply) -> None:
    problems, notes = [], []
    if not data.pip_check.ok:
        problems.append(f"pip check: {data.pip_check.error}")
    for mod in ("torch", "sglang"):
        if mod in data.dists:
            r = data.imports[mod]
            if not r.ok:
                problems.append(f"import {mod}: {r.error}")
            else:
                notes.append(f"import {mod} {r.value.get('version')}")
    rt = data.runtime
    if "triton" in data.dists:
        if not rt.cc:
            problems.append("no C compiler: Triton compiles its launcher at first use")
        if not rt.python_h:
            problems.append("no Python.h: Triton's launcher needs the Python headers")
    if "sgl-kernel" in data.dists and not rt.libnuma:
        problems.append("libnuma.so.1 missing: sgl_kernel links it")
    if problems:
        report.add("environment", "environment", "fail", "; ".join(problems))
    else:
        report.add("environment", "environment", "pass", ", ".join(["pip check clean", *notes]))


def _gpu_checks(report: Report, engine: Engine, image_id: str, gpu: str, model: str | None, arch: str) -> None:
    names = [("gpu-device", "GPU device"), ("gpu-compute", "GPU compute"), ("gpu-serve", "GPU serving")]
    if gpu == "off":
        for id_, name in names:
            report.add(id_, name, "skip", "--gpu off")
        return
    if not engine.has_nvidia_runtime:
        status = "fail" if gpu == "require" else "skip"
        for id_, name in names:
            report.add(id_, name, status, "this engine has no NVIDIA runtime (no GPU): --gpus all cannot run")
        return
    from .verify_gpu import gpu_checks

    report.checks += gpu_checks(engine, image_id, arch, model)
