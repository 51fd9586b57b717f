"""``sglbuild verify``: prove an image can serve on its GPU architectures before its tag is trusted.

Static checks run inside the image (the probe, :mod:`builder.probe`) without network and
need no GPU: pins, GPU code per library, shared libraries, serving flags, environment.
GPU checks (:mod:`builder.check.verify_gpu`) run when the engine has NVIDIA's runtime. Each
check passes, fails or is skipped with a reason; those that depend on the architecture are
judged once per architecture, from one probe run. A pass is recorded on this machine (what
``push`` and ``promote`` trust), unless the caller records it itself (the build's gate).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from ..contracts import (
    JitAnswer,
    DEFAULT_PLATFORM,
    LABEL_GPU_ARCH,
    LABEL_LOCK_DIGEST,
    LABEL_TARGET,
    LABEL_UNLOADABLE,
    LOCK_IN_IMAGE,
    TOOLS,
    StaticReply,
)
from ..errors import InputError, LockError, ProfileError
from ..inputs.serving import server_flags
from ..inputs.lockfile import Lock, LockFile, parse_lock, parse_lock_file, read_lock
from ..state import record_verified
from .aot import aot_check, aot_feature
from .command import ServerCommand, server_command
from .driver import driver_check
from .features import Feature, derive, features, sglang_default
from .gpucode import ImageGpuCode, coverage, relative, required_globs
from .host import gpus
from .report import Check, Report
from .reply import static_reply

if TYPE_CHECKING:
    from ..engine import Engine
    from ..inputs.profile import Profile

# Libraries provided by the NVIDIA container runtime on a GPU host, not by the image.
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"}


def repository_lock(profile: Profile | None, labels: dict[str, str], platform: str | None = None) -> Lock | None:
    """The repository's current lock for the image's target and platform, to report drift (None if there is none)."""
    if profile is None:
        return None
    try:
        return read_lock(profile, profile.target(labels.get(LABEL_TARGET)), platform)
    except (ProfileError, LockError):
        return None


def parse_archs(value: str) -> list[str]:
    """"sm_100,sm_121" -> ["sm_100", "sm_121"] (each checked like the profile's gpu_arch)."""
    import re

    archs = [a.strip() for a in value.split(",") if a.strip()]
    bad = [a for a in archs if not re.fullmatch(r"sm_\d+[af]?", a)]
    if not archs or bad:
        raise InputError(f"{value!r} is not a list of GPU architectures", "give them like sm_120 or sm_100,sm_121")
    return list(dict.fromkeys(archs))


def resolve_archs(given: list[str] | None, labels: dict[str, str]) -> tuple[list[str], str]:
    """The architectures to verify for, and where they came from."""
    if given:
        return given, "from --arch"
    if labels.get(LABEL_GPU_ARCH):
        return parse_archs(labels[LABEL_GPU_ARCH]), f"from the image's {LABEL_GPU_ARCH} label"
    found = gpus()
    if found:
        return [found[0].arch], f"from this host's GPU: {found[0].name}, compute {found[0].capability}"
    raise InputError("no architecture to verify for: no --arch, no io.sglbuild.gpu-arch label, no GPU on this host",
                     "pass --arch, e.g. --arch sm_120")


def serving_arch(labels: dict[str, str]) -> tuple[str, str]:
    """The architecture a server started here runs on: this host's GPU, else the first the image declares."""
    found = gpus()
    if found:
        return found[0].arch, f"this host's {found[0].name}"
    archs, source = resolve_archs(None, labels)
    return archs[0], source.removeprefix("from ")


def judge_server_flags(engine: Engine, image_ref: str, flags: list[str], arch: str) -> Check:
    """FLAGS (every argument a server of IMAGE_REF gets) parsed by the image's own SGLang, and what they select held to the
    image's evidence on ARCH: verify's serving-flags check, for one command (the probe's answer kept by content)."""
    image = engine.images.get(image_ref)
    data = static_reply(engine, image, [arch], flags)
    report = Report("verify", image_ref, image.id, [arch])
    check_flags(report, data, ServerCommand(flags, "serve's command"), {arch: features(data, ImageGpuCode.of(data), arch)})
    return next(c for c in report.checks if c.id == "serve-flags")


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


def verify(engine: Engine, image_ref: str, *, archs: list[str] | None = None, gpu: str = "auto", model: str | None = None,
           repo_lock: Lock | None = None, lock: LockFile | Lock | None = None, run_args: list[str] | None = None,
           record: bool = True, fresh: bool = False, jit: dict[str, JitAnswer] | None = None) -> Report:
    """Check IMAGE_REF for the architectures of --arch, its label or this host's GPU.

    LOCK (``--lock FILE``) is compared with the installed pins when given, else the image's own
    lock, if it has one; REPO_LOCK is the repository's lock, for drift. RUN_ARGS are the
    arguments a user passes to ``docker run``, in place of the image's CMD. ``fresh`` probes
    the image again instead of reading this machine's earlier answer. ``jit``: the JIT probe's answer for the image's
    very files, known to the caller (the gate: from the build's evidence stage), so the probe does not compile again.
    """
    started = time.monotonic()
    image = engine.images.get(image_ref)
    archs, source = resolve_archs(archs, image.labels)
    command = server_command(image.config, image.labels, run_args)
    data = static_reply(engine, image, archs, command.flags, fresh=fresh, jit=jit)
    code = ImageGpuCode.of(data)
    report = Report("verify", image_ref, image.id, archs, source, facts=versions(data))
    tables = {arch: features(data, code, arch) + [row for row in [aot_feature(data, arch)] if row] for arch in archs}
    for arch, rows in tables.items():
        report.features[arch] = rows
        picked = (data.defaults or {}).get(arch)
        if picked:
            report.defaults[arch] = {**picked, "summary": default_summary(picked, rows)}
        if "sglang" in data.dists:
            report.derived[arch] = server_flags(derive(rows, sglang_default(data, [arch])), data.dists["sglang"], address=False)
    given = lock.lock(image.platform) if isinstance(lock, LockFile) else lock
    _check_pins(report, data, image.labels, repo_lock, given, image.platform)
    required = required_globs(image.labels, data)
    report.checks += [coverage(code, required, arch) for arch in archs]
    report.checks += [c for c in (aot_check(data, arch) for arch in archs) if c is not None]
    _check_shared_libs(report, data, json.loads(image.labels.get(LABEL_UNLOADABLE, "{}") or "{}"))
    report.checks += [driver_check(data, arch) for arch in archs]
    check_flags(report, data, command, tables)
    _check_environment(report, data)
    _gpu_checks(report, engine, image.id, gpu, model, archs)
    report.seconds = time.monotonic() - started
    if record and report.passed:
        record_verified(report.image_id, gpu_checked=any(c.id == "gpu-compute" and c.status == "pass" for c in report.checks))
    return report


def _check_pins(report: Report, data: StaticReply, labels: dict, repo_lock: Lock | None, given: Lock | None,
                platform: str = DEFAULT_PLATFORM) -> None:
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
    lock = parse_lock(data.lock, "lock in image", platform if parse_lock_file(data.lock, "lock in image").multi else None)
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
        rel = relative(path, data.site_packages)
        glob_ = next((g for g in (declared or {}) if PurePosixPath(rel).match(g)), None)
        if glob_ is not None:
            excused.setdefault(glob_, []).append(rel)
            del broken[path]
    said = "".join(f"; {len(rels)} declared unloadable ({g}: {(declared or {})[g]})" for g, rels in sorted(excused.items()))
    runtime = sorted({m for ms in missing.values() for m in ms if m in DRIVER_LIBS})
    if broken:
        path, libs = sorted(broken.items())[0]
        report.add("shared-libs", "shared libraries", "fail",
                   f"{', '.join(libs)} not found for {relative(path, data.site_packages)}"
                   + (f" and {len(broken) - 1} more libraries" if len(broken) > 1 else "") + said,
                   "install the system library it needs in the image, or declare the library unloadable in the profile")
    else:
        note = f"; {', '.join(runtime)} provided at run time by the NVIDIA container runtime" if runtime else ""
        resolved = len(missing) - sum(len(r) for r in excused.values())
        report.add("shared-libs", "shared libraries", "pass", f"{resolved} GPU libraries resolve{note}{said}")


def default_summary(picked: dict, rows: list[Feature]) -> str:
    """"attention flashinfer (yes), sampling flashinfer (yes), for an MHA model with no backend flag": what the image's
    SGLang picks by itself on the architecture, and whether the evidence says it runs there."""
    if "error" in picked:
        return f"not known ({picked['error']})"
    states = {f.name: f.state for f in rows}
    return ", ".join(f"{kind} {picked[f'{kind}_backend']} ({states.get(f'{kind} ' + picked[f'{kind}_backend'], '?')})"
                     for kind in ("attention", "sampling")) + " for an MHA model with no backend flag"


def selected_features(args: dict) -> list[str]:
    """The feature-table rows a server's parsed arguments select (the split prefill and decode backends too)."""
    backends = [args.get(k) for k in ("attention_backend", "prefill_attention_backend", "decode_attention_backend")]
    selected = [f"attention {b}" for b in dict.fromkeys(b for b in backends if b)]
    selected += [f"sampling {args['sampling_backend']}"] if args.get("sampling_backend") else []
    if (args.get("tp_size") or 1) > 1 and not args.get("disable_custom_all_reduce"):  # one GPU all-reduces nothing
        selected.append("custom all-reduce")
    selected += [] if args.get("disable_cuda_graph") else ["cuda graphs"]
    return selected


def with_defaults(args: dict, defaults: dict | None) -> tuple[dict, list[str], str | None]:
    """ARGS with the backends they leave unset filled in as the image's SGLang picks them on the architecture (DEFAULTS,
    the probe's answer for it): (the arguments, the names filled in, why they could not be when they could not)."""
    split = args.get("prefill_attention_backend") and args.get("decode_attention_backend")  # both phases named
    unset = [k for k in ("attention_backend", "sampling_backend") if not args.get(k) and not (k == "attention_backend" and split)]
    if not unset:
        return args, [], None
    if not defaults or "error" in defaults:
        return args, [], (defaults or {}).get("error", "the probe did not ask the image's SGLang")
    return {**args, **{k: defaults[k] for k in unset}}, unset, None


def check_flags(report: Report, data: StaticReply, command: ServerCommand, tables: dict[str, list[Feature]]) -> None:
    """The server flags parse with the image's own SGLang, and every feature they select runs on each target, the
    backends they leave to SGLang as SGLang itself picks them for that architecture."""
    if command.flags is None:
        report.add("serve-flags", "serving flags", "skip", f"no SGLang server command in {command.source}: "
                   "pass the server's arguments after --, as to docker run")
        return
    parsed = data.flags
    if parsed is None or not parsed.ok:
        why = parsed.error if parsed else "sglang is not importable"
        report.add("serve-flags", "serving flags", "fail", f"the image's SGLang rejects the flags from {command.source}: {why}",
                   "spell the flags as the image's SGLang does ('sglbuild verify' shows the flags its evidence supports)")
        return
    for arch, rows in tables.items():
        table = {f.name: f for f in rows}
        args, filled, unknown = with_defaults(parsed.value, (data.defaults or {}).get(arch))
        by_sglang = {f"{k.split('_')[0]} {args[k]}" for k in filled}  # "attention flashinfer", "sampling pytorch"
        chosen = f"; SGLang's own choice on {arch}: {', '.join(sorted(by_sglang))}" if by_sglang else ""
        problems = [f"{name}{' (SGLang picks it: no flag names one)' if name in by_sglang else ''}: {table[name].evidence}"
                    for name in selected_features(args) if name in table and table[name].available is False]
        if problems:
            report.add("serve-flags", "serving flags", "fail", f"flags from {command.source} select what cannot run on {arch}: "
                       + "; ".join(problems[:3]), f"use the flags derived for {arch} below", arch=arch)
        elif unknown:
            report.add("serve-flags", "serving flags", "warn", f"accepted by the image's SGLang (from {command.source}), but the "
                       f"backends they leave to SGLang on {arch} are not known: {unknown}",
                       "name --attention-backend and --sampling-backend", arch=arch)
        else:
            report.add("serve-flags", "serving flags", "pass",
                       f"accepted by the image's SGLang (from {command.source}): {' '.join(command.flags) or '(none)'}{chosen}", arch=arch)


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


def _gpu_checks(report: Report, engine: Engine, image_id: str, gpu: str, model: str | None, archs: list[str]) -> None:
    names = [("gpu-device", "GPU device"), ("gpu-compute", "GPU compute"), ("gpu-serve", "GPU serving")]
    if gpu == "off":
        for id_, name in names:
            report.add(id_, name, "skip", "--gpu off")
        return
    if not engine.has_nvidia_runtime:
        status = "fail" if gpu == "require" else "skip"
        for id_, name in names:
            report.add(id_, name, status, "this engine has no NVIDIA runtime (no GPU): --gpus all cannot run",
                       "run verify on a machine with an NVIDIA GPU and the NVIDIA Container Toolkit")
        return
    from .verify_gpu import gpu_checks

    report.checks += gpu_checks(engine, image_id, archs, model)
