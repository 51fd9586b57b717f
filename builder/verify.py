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

from .command import ServerCommand, server_command
from .contracts import LABEL_GPU_ARCH, LABEL_LOCK_DIGEST, LABEL_REQUIRE_NATIVE, LABEL_UNLOADABLE, LABEL_TARGET, LOCK_IN_IMAGE, TOOLS, GpuCode, StaticReply
from .errors import InputError, LockError, ProfileError
from .features import Feature, derive, features
from .flags import server_flags
from .host import gpus
from .lock import Lock, parse_lock
from .probe.fatbin import arch_key, verdict
from .report import Report

if TYPE_CHECKING:
    from .engine import Engine
    from .profile import Profile

# Libraries provided by the NVIDIA container runtime on a GPU host, not by the image.
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"}


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


def resolve_arch(target_arch: str | None, labels: dict[str, str]) -> tuple[str, str]:
    """The architecture to verify for, and where it came from."""
    if target_arch:
        return target_arch, "from --arch"
    if labels.get(LABEL_GPU_ARCH):
        return labels[LABEL_GPU_ARCH], f"from the image's {LABEL_GPU_ARCH} label"
    found = gpus()
    if found:
        return found[0].arch, f"from this host's GPU: {found[0].name}, compute {found[0].capability}"
    raise InputError("no architecture to verify for: no --arch, no io.sglbuild.gpu-arch label, no GPU on this host",
                     "pass --arch, e.g. --arch sm_120")


def versions(data: StaticReply) -> dict[str, str]:
    """The installed versions that decide what runs, as facts."""
    facts = {"Python": data.python}
    torch = data.imports.get("torch")
    if torch is not None and torch.ok:
        facts["torch"] = f"{torch.value.get('version')} (CUDA {torch.value.get('cuda')})"
    for name in ("sgl-kernel", "sglang-kernel", "sglang", "flashinfer-python", "flashinfer-cubin", "triton"):
        if name in data.dists:
            facts[name] = data.dists[name]
    return facts


def verify(engine: Engine, image_ref: str, *, target_arch: str | None = None, gpu: str = "auto", model: str | None = None,
           repo_lock: Lock | None = None, lock: Lock | None = None, run_args: list[str] | None = None) -> Report:
    """Check IMAGE_REF for the architecture of --arch, its label or this host's GPU.

    LOCK (``--lock FILE``) is compared with the installed pins when given, else the image's own
    lock, if it has one; REPO_LOCK is the repository's lock, for drift. RUN_ARGS are the
    arguments a user passes to ``docker run``, in place of the image's CMD.
    """
    started = time.monotonic()
    image = engine.images.get(image_ref)
    labels = image.labels or {}
    arch, arch_source = resolve_arch(target_arch, labels)
    command = server_command(image.attrs.get("Config") or {}, labels, run_args)
    args = ["static", "--target", arch] + (["--flags", json.dumps(command.flags)] if command.flags is not None else [])
    data = StaticReply.from_dict(engine.containers.probe(image.id, args))
    libs = {_relative(c.path, data.site_packages): c for c in data.libraries}
    report = Report(image_ref, image.id, arch, arch_source, facts=versions(data))
    rows = features(data, libs, arch)
    report.features = [{"name": f.name, "state": f.state, "available": f.available, "evidence": f.evidence} for f in rows]
    if "sglang" in data.dists:
        report.derived = server_flags(derive(rows), data.dists["sglang"], address=False)
    _check_pins(report, data, labels, repo_lock, lock)
    _check_gpu_code(report, libs, json.loads(labels.get(LABEL_REQUIRE_NATIVE, "[]") or "[]"), arch)
    _check_shared_libs(report, data, json.loads(labels.get(LABEL_UNLOADABLE, "{}") or "{}"))
    _check_flags(report, data, command, rows)
    _check_environment(report, data)
    _gpu_checks(report, engine, image.id, gpu, model, arch)
    report.seconds = time.monotonic() - started
    return report


def _check_pins(report: Report, data: StaticReply, labels: dict, repo_lock: Lock | None, given: Lock | None) -> None:
    if given is not None:
        _compare_pins(report, data, given, "as the given lock")
        return
    if data.lock is None:
        report.add("pins", "pins", "skip", f"no lock to compare with: the image carries none ({LOCK_IN_IMAGE}); pass --lock FILE")
        return
    digest = "sha256:" + hashlib.sha256(data.lock.encode()).hexdigest()
    if labels.get(LABEL_LOCK_DIGEST) != digest:
        report.add("pins", "pins", "fail", f"the lock inside ({digest[:19]}) is not the one the labels name ({labels.get(LABEL_LOCK_DIGEST)})")
        return
    lock = parse_lock(data.lock, "lock in image")
    if not _compare_pins(report, data, lock, f"as locked ({digest[:19]})"):
        return
    if repo_lock is not None and repo_lock.digest != digest.split(":")[1]:
        theirs = {w.name: w.version for w in repo_lock.wheels}
        moved = [f"{w.name} {w.version}->{theirs.get(w.name, 'removed')}" for w in lock.wheels if theirs.get(w.name) != w.version]
        report.checks[-1].detail += f"; drift from the repository's lock: {', '.join(moved[:5]) or 'same pins, other hashes or base'}"


def _compare_pins(report: Report, data: StaticReply, lock: Lock, how: str) -> bool:
    dists = data.dists
    wrong = [f"{w.name} {dists.get(w.name, 'absent')} (lock {w.version})" for w in lock.wheels
             if w.stage != TOOLS and dists.get(w.name) != w.version]
    if wrong:
        report.add("pins", "pins", "fail", f"{len(wrong)} installed versions differ from the lock: {'; '.join(wrong[:4])}")
        return False
    key = [f"{n} {dists[n]}" for n in ("torch", "sgl-kernel", "sglang-kernel", "sglang") if n in dists]
    report.add("pins", "pins", "pass", f"{len(lock.wheels)} wheels {how}: {', '.join(key)}")
    return True


def _check_gpu_code(report: Report, libs: dict[str, GpuCode], required: list[str], arch: str) -> None:
    loadable = {rel: c for rel, c in libs.items() if c.kind == "library"}
    verdicts = {rel: verdict(c, arch) for rel, c in loadable.items()}
    counts = {v: sum(x == v for x in verdicts.values()) for v in ("native", "ptx-jit", "none")}
    none = sorted(rel for rel, v in verdicts.items() if v == "none")
    summary = f"{len(loadable)} libraries with GPU code: {counts['native']} native, {counts['ptx-jit']} via PTX JIT, {counts['none']} none"
    if none:
        summary += f" ({', '.join(PurePosixPath(n).name for n in none[:6])}{' ...' if len(none) > 6 else ''})"
    cubins = [c for c in libs.values() if c.kind in ("cubin", "fatbin")]
    if cubins:
        ready = sum(verdict(c, arch) == "native" for c in cubins)
        archs = sorted({a for c in cubins for a in c.sass}, key=arch_key)
        summary += f"; {len(cubins)} standalone cubins, {ready} for {arch} ({' '.join(archs)})"
    static = [PurePosixPath(rel).name for rel, c in libs.items() if c.kind == "relocatable"]
    if static:
        summary += f"; {len(static)} with device-link code only, never loaded ({', '.join(sorted(static)[:3])})"
    problems = []
    for glob in required:
        hits = _matching(loadable, [glob])
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


def _check_shared_libs(report: Report, data: StaticReply, declared: dict[str, str] | None = None) -> None:
    """Every GPU library's dependencies resolve, but for those the image declares unloadable (its label), and why."""
    missing = data.ldd_missing
    if missing is None:
        report.add("shared-libs", "shared libraries", "skip", "the image has no ldd")
        return
    broken = {p: [m for m in ms if m not in DRIVER_LIBS] for p, ms in missing.items()}
    broken = {p: ms for p, ms in broken.items() if ms}
    excused: dict[str, list[str]] = {}
    for path in list(broken):
        rel = _relative(path, data.site_packages)
        glob_ = next((g for g in (declared or {}) if PurePosixPath(rel).match(g)), None)
        if glob_ is not None:
            excused.setdefault(glob_, []).append(rel)
            del broken[path]
    said = "".join(f"; {len(rels)} declared unloadable ({g}: {(declared or {})[g]})" for g, rels in sorted(excused.items()))
    runtime = sorted({m for ms in missing.values() for m in ms if m in DRIVER_LIBS})
    if broken:
        path, libs = sorted(broken.items())[0]
        report.add("shared-libs", "shared libraries", "fail",
                   f"{', '.join(libs)} not found for {_relative(path, data.site_packages)}"
                   + (f" and {len(broken) - 1} more libraries" if len(broken) > 1 else "") + said)
    else:
        note = f"; {', '.join(runtime)} provided at run time by the NVIDIA container runtime" if runtime else ""
        resolved = len(missing) - sum(len(r) for r in excused.values())
        report.add("shared-libs", "shared libraries", "pass", f"{resolved} GPU libraries resolve{note}{said}")


def _check_flags(report: Report, data: StaticReply, command: ServerCommand, rows: list[Feature]) -> None:
    """The server flags parse with the image's own SGLang, and every feature they select runs on the target."""
    if command.flags is None:
        report.add("serve-flags", "serving flags", "skip", f"no SGLang server command in {command.source}: "
                   "pass the server's arguments after --, as to docker run")
        return
    parsed = data.flags
    if parsed is None or not parsed.ok:
        why = parsed.error if parsed else "sglang is not importable"
        report.add("serve-flags", "serving flags", "fail", f"the image's SGLang rejects the flags from {command.source}: {why}")
        return
    args, table = parsed.value, {f.name: f for f in rows}
    selected = [f"attention {args.get('attention_backend')}"] if args.get("attention_backend") else []
    selected += [f"sampling {args['sampling_backend']}"] if args.get("sampling_backend") else []
    if (args.get("tp_size") or 1) > 1 and not args.get("disable_custom_all_reduce"):  # one GPU all-reduces nothing
        selected.append("custom all-reduce")
    selected += [] if args.get("disable_cuda_graph") else ["cuda graphs"]
    problems = [f"{name}: {table[name].evidence}" for name in selected if name in table and table[name].available is False]
    if problems:
        report.add("serve-flags", "serving flags", "fail", f"flags from {command.source} select what cannot run on {report.target_arch}: "
                   + "; ".join(problems[:3]))
    else:
        report.add("serve-flags", "serving flags", "pass", f"accepted by the image's SGLang (from {command.source}): {' '.join(command.flags)}")


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
