"""``sglbuild doctor [IMAGE]``: what to check on this machine before serving, one line each, with what to do.

Host: the NVIDIA driver and its version, the GPUs and their compute capability, the engine's
NVIDIA runtime. With an IMAGE: the driver is new enough for the image's CUDA, the image's GPU
code covers this machine's GPU (verify's evidence, read for this GPU's architecture), shared
memory for the server, and the Hugging Face cache directory. ``serve`` runs the same checks first.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .archs import verdict
from .contracts import LABEL_GPU_ARCH, LABEL_REQUIRE_NATIVE, StaticReply
from .errors import EngineUnavailable
from .host import HostGpu, gpus

if TYPE_CHECKING:
    from .engine import Engine

# The driver each CUDA toolkit release needs (CUDA Toolkit release notes, "CUDA Toolkit and Corresponding
# Driver Versions", Linux x86_64). Below it but at the major line's floor, minor-version compatibility runs
# the image's own SASS but not PTX JIT or the newest APIs: a warning, not a failure.
TOOLKIT_DRIVER = {
    "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03", "12.3": "545.23.06", "12.4": "550.54.14",
    "12.5": "555.42.02", "12.6": "560.28.03", "12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06",
}
MAJOR_FLOOR = {"12": "525.60.13", "13": "580.65.06"}
SHM_NEEDED = 8 << 30  # serve's --shm-size
HF_CACHE_FREE = 20 << 30  # room for a mid-sized model's weights


@dataclass
class Finding:
    id: str
    name: str
    status: str  # "pass" | "warn" | "fail" | "skip"
    detail: str
    hint: str = ""


@dataclass
class Doctor:
    image: str | None = None
    findings: list[Finding] = field(default_factory=list)

    def add(self, id_: str, name: str, status: str, detail: str, hint: str = "") -> None:
        self.findings.append(Finding(id_, name, status, detail, hint))

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failed

    def text(self) -> str:
        lines = [f"doctor{' ' + self.image if self.image else ''}"]
        for f in self.findings:
            lines.append(f"  {f.status.upper():<4}  {f.name:<20} {f.detail}" + (f"  -> {f.hint}" if f.hint else ""))
        counts = {s: sum(f.status == s for f in self.findings) for s in ("pass", "warn", "fail", "skip")}
        lines.append(f"{'READY' if self.passed else 'NOT READY'}: {counts['pass']} passed, {counts['warn']} warnings, "
                     f"{counts['fail']} failed, {counts['skip']} skipped")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"image": self.image, "passed": self.passed, "findings": [asdict(f) for f in self.findings]}


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def driver_floor(cuda: str) -> tuple[str | None, str | None]:
    """(the toolkit's driver, the major line's floor) for a CUDA version such as "12.8" or "13.0.2"."""
    short = ".".join(cuda.split(".")[:2])
    return TOOLKIT_DRIVER.get(short), MAJOR_FLOOR.get(cuda.split(".")[0])


def driver_for(cuda: str, driver: str | None) -> Finding:
    """Whether DRIVER (None: no driver here) runs an image built for CUDA (torch.version.cuda, "" if none)."""
    name = "driver for image"
    if not cuda:
        return Finding("cuda-driver", name, "skip", "the image's torch reports no CUDA version")
    floor, major = driver_floor(cuda)
    if driver is None:
        return Finding("cuda-driver", name, "fail", f"the image needs CUDA {cuda}: driver {floor or major or '?'} or later; none here",
                       "install the NVIDIA driver")
    if floor and _version(driver) >= _version(floor):
        return Finding("cuda-driver", name, "pass", f"CUDA {cuda} needs driver {floor}; this one is {driver}")
    if floor and major and _version(driver) >= _version(major):
        return Finding("cuda-driver", name, "warn",
                       f"CUDA {cuda} needs driver {floor}; {driver} runs it by minor-version compatibility only (no PTX JIT)",
                       f"upgrade the driver to {floor} or later")
    if not floor and not major:
        return Finding("cuda-driver", name, "warn", f"CUDA {cuda}: no known driver floor; this one is {driver}",
                       "check NVIDIA's CUDA release notes for the driver it needs")
    return Finding("cuda-driver", name, "fail", f"CUDA {cuda} needs driver {floor or major}; this one is {driver}",
                   f"upgrade the driver to {floor or major} or later, or use an image built for an older CUDA")


def check_host(doc: Doctor, found: list[HostGpu], engine: Engine | None, engine_error: str | None) -> None:
    if not found:
        doc.add("driver", "NVIDIA driver", "fail", "nvidia-smi is not installed or sees no GPU",
                "install the NVIDIA driver (580 or later serves CUDA 12.8 and 13 images) and reboot")
    else:
        doc.add("driver", "NVIDIA driver", "pass", f"{found[0].driver} (nvidia-smi)")
        listing = "; ".join(f"{i}: {g.name}, compute {g.capability} ({g.arch}), {g.memory_mib // 1024} GiB" for i, g in enumerate(found))
        doc.add("gpus", "GPUs", "pass", listing)
    if engine is None:
        doc.add("runtime", "engine GPU runtime", "fail", engine_error or "no Docker engine answers",
                "start Docker ('systemctl start docker') or set DOCKER_HOST")
    elif engine.has_nvidia_runtime:
        doc.add("runtime", "engine GPU runtime", "pass", f"Docker {engine.version} has the nvidia runtime")
    else:
        doc.add("runtime", "engine GPU runtime", "fail", f"Docker {engine.version} has no nvidia runtime: --gpus cannot run",
                "install the NVIDIA Container Toolkit and run 'nvidia-ctk runtime configure --runtime=docker', then restart Docker")


def check_image(doc: Doctor, engine: Engine, image_ref: str, found: list[HostGpu]) -> None:
    image = engine.images.get(image_ref)
    labels = image.labels or {}
    arch = found[0].arch if found else labels.get(LABEL_GPU_ARCH, "sm_120")
    data = StaticReply.from_dict(engine.containers.probe(image.id, ["static", "--target", arch]))
    torch = data.imports.get("torch")
    cuda = str(torch.value.get("cuda") or "") if torch is not None and torch.ok else ""
    doc.findings.append(driver_for(cuda, found[0].driver if found else None))
    _check_coverage(doc, data, labels, arch, bool(found))
    _check_shm(doc)
    _check_hf_cache(doc)


def _check_coverage(doc: Doctor, data: StaticReply, labels: dict[str, str], arch: str, on_gpu: bool) -> None:
    from .verify import _matching, _relative  # verify's reading of the same label: globs under site-packages

    libs = {_relative(c.path, data.site_packages): c for c in data.libraries if c.kind == "library"}
    verdicts = {p: verdict(c, arch) for p, c in libs.items()}
    required = json.loads(labels.get(LABEL_REQUIRE_NATIVE, "[]") or "[]") or ["torch/lib/libtorch_cuda.so"]
    missing = [p for p in _matching(libs, required) if verdicts[p] != "native"]
    where = "this machine's GPU" if on_gpu else "the image's target (no GPU here)"
    counts = f"{sum(v == 'native' for v in verdicts.values())} native, {sum(v == 'ptx-jit' for v in verdicts.values())} via PTX JIT, " \
             f"{sum(v == 'none' for v in verdicts.values())} none of {len(libs)} libraries"
    if missing:
        doc.add("coverage", "GPU code", "fail", f"for {arch} ({where}): {', '.join(PurePosixPath(p).name for p in missing[:3])} "
                f"carry no {arch} code; {counts}", f"use an image built for {arch} ('sglbuild verify IMAGE --arch {arch}' shows what runs)")
    else:
        doc.add("coverage", "GPU code", "pass", f"for {arch} ({where}): {counts}")


def _check_shm(doc: Doctor) -> None:
    try:
        pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        doc.add("shm", "shared memory", "skip", "free memory unknown")
        return
    free = pages * size
    if free >= SHM_NEEDED:
        doc.add("shm", "shared memory", "pass", f"serve gives the container --shm-size {SHM_NEEDED >> 30}g; {free / 2**30:.0f} GiB of memory free")
    else:
        doc.add("shm", "shared memory", "warn", f"serve gives the container --shm-size {SHM_NEEDED >> 30}g; only {free / 2**30:.1f} GiB of memory free",
                "free memory, or serve a smaller model")


def _check_hf_cache(doc: Doctor) -> None:
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    existing = next((p for p in (home, *home.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if not os.access(existing, os.W_OK):
        doc.add("hf-cache", "Hugging Face cache", "fail", f"{home} is not writable", "chown it, or set HF_HOME to a writable directory")
    elif free < HF_CACHE_FREE:
        doc.add("hf-cache", "Hugging Face cache", "warn", f"{home}: {free / 2**30:.1f} GiB free", "free disk space (models are 2-150 GB)")
    else:
        doc.add("hf-cache", "Hugging Face cache", "pass", f"{home}{'' if home.exists() else ' (made at first use)'}: {free / 2**30:.0f} GiB free")


def doctor(connect_engine, image_ref: str | None = None, *, nvidia_smi: str | None = None) -> Doctor:
    """All checks; CONNECT_ENGINE gives the engine (or raises EngineUnavailable), so the host checks run without one."""
    doc = Doctor(image_ref)
    found = gpus(nvidia_smi)
    engine, error = None, None
    try:
        engine = connect_engine()
    except EngineUnavailable as exc:
        error = exc.message  # its hint is the finding's own
    check_host(doc, found, engine, error)
    if image_ref is not None:
        if engine is None:
            doc.add("image", "image", "skip", f"{image_ref}: no engine to read it from")
        else:
            check_image(doc, engine, image_ref, found)  # an image that is not there: the command's error (exit 2)
    return doc
