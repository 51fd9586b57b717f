"""``sglbuild verify``: prove an image can serve on its GPU architecture before its tag is trusted.

Static checks run inside the image without network and need no GPU: pins, GPU code per
library, shared libraries, serving flags, environment. GPU checks run when the engine
has NVIDIA's runtime. Each check passes, fails or is skipped with a reason.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

import docker
import docker.errors

from .archs import run_probe
from .engine import find_image
from .errors import CheckFailed, InputError
from .fatbin import GpuCode, arch_key, verdict
from .lock import Lock, parse_lock

# Libraries provided by the NVIDIA container runtime on a GPU host, not by the image.
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"}
# Which libraries a serving feature runs on; JIT-compiled backends have none to check.
ATTENTION_LIBS = {
    "fa3": ["sgl_kernel/*flash_ops*.so"],
    "flashmla": ["sgl_kernel/*flashmla_ops*.so"],
    "torch_native": ["torch/lib/libtorch_cuda.so"],
}
CUSTOM_ALL_REDUCE_LIBS = ["sgl_kernel/*mscclpp*.so*", "sgl_kernel/*/common_ops*.so"]


class VerifyFailed(CheckFailed):
    """Raised when the image failed at least one check (exit 1; could-not-run errors use 2 and 3)."""


@dataclass
class Check:
    id: str
    name: str
    status: str  # "pass" | "fail" | "skip"
    detail: str
    seconds: float = 0.0


@dataclass
class Report:
    image: str
    image_id: str
    target_arch: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def add(self, id_: str, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(id_, name, status, detail))

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def text(self) -> str:
        lines = [f"verify {self.image} ({self.image_id[:19]}) for {self.target_arch}"]
        for c in self.checks:
            lines.append(f"  {c.status.upper():<4}  {c.name:<22} {c.detail}")
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skip")}
        verdict_ = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict_}: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {self.seconds:.1f} s")
        return "\n".join(lines) + "\n"

    def junit(self) -> str:
        suite = ET.Element("testsuite", name=f"sglbuild verify {self.image}", tests=str(len(self.checks)),
                           failures=str(sum(c.status == "fail" for c in self.checks)),
                           skipped=str(sum(c.status == "skip" for c in self.checks)), time=f"{self.seconds:.2f}")
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname="sglbuild.verify", name=c.name, time=f"{c.seconds:.2f}")
            if c.status == "fail":
                ET.SubElement(case, "failure", message=c.detail[:500]).text = c.detail
            elif c.status == "skip":
                ET.SubElement(case, "skipped", message=c.detail[:500])
            else:
                ET.SubElement(case, "system-out").text = c.detail
        return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"


def _relative(path: str, site_packages: list[str]) -> str:
    for sp in site_packages:
        if path.startswith(sp.rstrip("/") + "/"):
            return path[len(sp.rstrip("/")) + 1:]
    return path


def _matching(libs: dict[str, GpuCode], globs: list[str]) -> dict[str, GpuCode]:
    return {rel: c for rel, c in libs.items() if any(fnmatch.fnmatch(rel, g) for g in globs)}


def verify(client: docker.DockerClient, image_ref: str, *, target_arch: str | None = None, gpu: str = "auto",
           model: str | None = None, repo_lock: Lock | None = None) -> Report:
    started = time.monotonic()
    image = find_image(client, image_ref)
    if image is None:
        raise InputError(f"no image {image_ref!r} on this engine", "build it, or pull it by digest")
    labels = image.labels or {}
    arch = target_arch or labels.get("io.sglbuild.gpu-arch")
    if not arch:
        raise InputError(f"{image_ref} has no io.sglbuild.gpu-arch label", "pass --arch, e.g. --arch sm_120")
    report = Report(image_ref, image.id, arch)
    flags = json.loads(labels.get("io.sglbuild.serve-flags", "[]") or "[]")
    data = run_probe(client, image.id, ["static", json.dumps(flags) if flags else "null"])
    sp = data["site_packages"]
    libs = {_relative(d["path"], sp): GpuCode(d["path"], set(d["sass"]), set(d["ptx"]), d["entries"], d["compressed_entries"])
            for d in data["archs"] if d["sass"] or d["ptx"]}
    _check_pins(report, data, labels, repo_lock)
    _check_gpu_code(report, libs, json.loads(labels.get("io.sglbuild.require-native", "[]") or "[]"), arch)
    _check_shared_libs(report, data)
    _check_flags(report, data, flags, libs, arch)
    _check_environment(report, data)
    _gpu_checks(report, client, image.id, gpu, model, libs, arch, flags)
    report.seconds = time.monotonic() - started
    return report


def _check_pins(report: Report, data: dict, labels: dict, repo_lock: Lock | None) -> None:
    text = data.get("lock")
    if text is None:
        report.add("pins", "pins", "fail", "the image carries no lock (/usr/share/sglbuild/lock.json): not built by sglbuild")
        return
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    if labels.get("io.sglbuild.lock-digest") != digest:
        report.add("pins", "pins", "fail", f"the lock inside ({digest[:19]}) is not the one the labels name ({labels.get('io.sglbuild.lock-digest')})")
        return
    lock = parse_lock(text, "lock in image")
    dists = data["dists"]
    wrong = [f"{w.name} {dists.get(w.name, 'absent')} (lock {w.version})" for w in lock.wheels
             if w.stage != "tools" and dists.get(w.name) != w.version]
    if wrong:
        report.add("pins", "pins", "fail", f"{len(wrong)} installed versions differ from the lock: {'; '.join(wrong[:4])}")
        return
    torch = data.get("torch", {}).get("value") or {}
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


def _check_shared_libs(report: Report, data: dict) -> None:
    missing = data.get("ldd_missing")
    if missing is None:
        report.add("shared-libs", "shared libraries", "skip", "the image has no ldd")
        return
    broken = {p: [m for m in ms if m not in DRIVER_LIBS] for p, ms in missing.items()}
    broken = {p: ms for p, ms in broken.items() if ms}
    runtime = sorted({m for ms in missing.values() for m in ms if m in DRIVER_LIBS})
    if broken:
        path, libs = sorted(broken.items())[0]
        report.add("shared-libs", "shared libraries", "fail",
                   f"{', '.join(libs)} not found for {_relative(path, data['site_packages'])}"
                   + (f" and {len(broken) - 1} more libraries" if len(broken) > 1 else ""))
    else:
        note = f"; {', '.join(runtime)} provided at run time by the NVIDIA container runtime" if runtime else ""
        report.add("shared-libs", "shared libraries", "pass", f"{len(missing)} GPU libraries resolve{note}")


def _check_flags(report: Report, data: dict, flags: list[str], libs: dict[str, GpuCode], arch: str) -> None:
    if not flags:
        report.add("serve-flags", "serving flags", "skip", "the image declares no default server flags")
        return
    parsed = data.get("flags") or {}
    if not parsed.get("ok"):
        report.add("serve-flags", "serving flags", "fail", f"the image's SGLang rejects its default flags: {parsed.get('error')}")
        return
    args = parsed["value"]
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


def _check_environment(report: Report, data: dict) -> None:
    problems, notes = [], []
    pipc = data["pip_check"]
    if pipc["exit_code"] != 0:
        problems.append(f"pip check: {pipc['output'].splitlines()[0] if pipc['output'] else 'failed'}")
    for mod in ("torch", "sglang"):
        if mod in data["dists"]:
            r = data[mod]
            if not r["ok"]:
                problems.append(f"import {mod}: {r['error']}")
            else:
                notes.append(f"import {mod} {r['value'].get('version')}")
    rt = data["runtime"]
    if "triton" in data["dists"]:
        if not rt["cc"]:
            problems.append("no C compiler: Triton compiles its launcher at first use")
        if not rt["python_h"]:
            problems.append("no Python.h: Triton's launcher needs the Python headers")
    if "sgl-kernel" in data["dists"] and not rt["libnuma"]:
        problems.append("libnuma.so.1 missing: sgl_kernel links it")
    if problems:
        report.add("environment", "environment", "fail", "; ".join(problems))
    else:
        report.add("environment", "environment", "pass", ", ".join(["pip check clean", *notes]))


def engine_has_gpu(client: docker.DockerClient) -> bool:
    return "nvidia" in (client.info().get("Runtimes") or {})


def _gpu_checks(report: Report, client: docker.DockerClient, image_id: str, gpu: str, model: str | None,
                libs: dict[str, GpuCode], arch: str, flags: list[str]) -> None:
    names = [("gpu-device", "GPU device"), ("gpu-compute", "GPU compute"), ("gpu-serve", "GPU serving")]
    if gpu == "off":
        for id_, name in names:
            report.add(id_, name, "skip", "--gpu off")
        return
    if not engine_has_gpu(client):
        status = "fail" if gpu == "require" else "skip"
        for id_, name in names:
            report.add(id_, name, status, "this engine has no NVIDIA runtime (no GPU): --gpus all cannot run")
        return
    from .gpuprobe import run_gpu_checks

    for check in run_gpu_checks(client, image_id, arch, model, flags):
        report.checks.append(check)
