"""``sglbuild doctor [IMAGE]``: what to check on this machine before serving, one line each, with what to do.

Host: the NVIDIA driver and its version, the GPUs and their compute capability, the engine's
NVIDIA runtime. With an IMAGE: the driver is new enough for the image's CUDA, the image's GPU
code covers this machine's GPU (read by :mod:`builder.check.gpucode`, as verify reads it),
shared memory for the server, and the Hugging Face cache it mounts. ``serve`` runs the same
checks first, for the server it is about to start. The answer is a :class:`Report`, as verify's.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING, Callable

from ..contracts import LABEL_GPU_ARCH
from ..errors import EngineUnavailable
from .gpucode import ImageGpuCode, coverage, required_globs
from .host import HostGpu, gpus
from .report import Check, Report
from .server import DEFAULT_SHM, cache_volume, hf_cache, shm_bytes
from .reply import static_reply

if TYPE_CHECKING:
    from ..engine import Engine
    from ..engine.records import ImageRecord

# The driver each CUDA toolkit release needs (CUDA Toolkit release notes, "CUDA Toolkit and Corresponding
# Driver Versions", Linux x86_64). Below it but at the major line's floor, minor-version compatibility runs
# the image's own SASS but not PTX JIT or the newest APIs: a warning, not a failure.
TOOLKIT_DRIVER = {
    "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03", "12.3": "545.23.06", "12.4": "550.54.14",
    "12.5": "555.42.02", "12.6": "560.28.03", "12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06",
}
MAJOR_FLOOR = {"12": "525.60.13", "13": "580.65.06"}
HF_CACHE_FREE = 20 << 30  # room for a mid-sized model's weights


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def driver_floor(cuda: str) -> tuple[str | None, str | None]:
    """(the toolkit's driver, the major line's floor) for a CUDA version such as "12.8" or "13.0.2"."""
    short = ".".join(cuda.split(".")[:2])
    return TOOLKIT_DRIVER.get(short), MAJOR_FLOOR.get(cuda.split(".")[0])


def driver_for(cuda: str, driver: str | None) -> Check:
    """Whether DRIVER (None: no driver here) runs an image built for CUDA (torch.version.cuda, "" if none)."""
    name = "driver for image"
    if not cuda:
        return Check("cuda-driver", name, "skip", "the image's torch reports no CUDA version")
    floor, major = driver_floor(cuda)
    if driver is None:
        return Check("cuda-driver", name, "fail", f"the image needs CUDA {cuda}: driver {floor or major or '?'} or later; none here",
                       "install the NVIDIA driver")
    if floor and _version(driver) >= _version(floor):
        return Check("cuda-driver", name, "pass", f"CUDA {cuda} needs driver {floor}; this one is {driver}")
    if floor and major and _version(driver) >= _version(major):
        return Check("cuda-driver", name, "warn",
                       f"CUDA {cuda} needs driver {floor}; {driver} runs it by minor-version compatibility only (no PTX JIT)",
                       f"upgrade the driver to {floor} or later")
    if not floor and not major:
        return Check("cuda-driver", name, "warn", f"CUDA {cuda}: no known driver floor; this one is {driver}",
                       "check NVIDIA's CUDA release notes for the driver it needs")
    return Check("cuda-driver", name, "fail", f"CUDA {cuda} needs driver {floor or major}; this one is {driver}",
                   f"upgrade the driver to {floor or major} or later, or use an image built for an older CUDA")


def check_host(report: Report, found: list[HostGpu], engine: Engine | None, engine_error: str | None) -> None:
    if not found:
        report.add("driver", "NVIDIA driver", "fail", "nvidia-smi is not installed or sees no GPU",
                   "install the NVIDIA driver (580 or later serves CUDA 12.8 and 13 images) and reboot")
    else:
        report.add("driver", "NVIDIA driver", "pass", f"{found[0].driver} (nvidia-smi)")
        listing = "; ".join(f"{i}: {g.name}, compute {g.capability} ({g.arch}), {g.memory_mib // 1024} GiB" for i, g in enumerate(found))
        report.add("gpus", "GPUs", "pass", listing)
    if engine is None:
        report.add("runtime", "engine GPU runtime", "fail", engine_error or "no Docker engine answers",
                   "start Docker ('systemctl start docker') or set DOCKER_HOST")
    elif engine.has_nvidia_runtime:
        report.add("runtime", "engine GPU runtime", "pass", f"Docker {engine.version} has the nvidia runtime")
    else:
        report.add("runtime", "engine GPU runtime", "fail", f"Docker {engine.version} has no nvidia runtime: --gpus cannot run",
                   "install the NVIDIA Container Toolkit and run 'nvidia-ctk runtime configure --runtime=docker', then restart Docker")


def check_image(report: Report, engine: Engine, image_ref: str, found: list[HostGpu], shm: str) -> None:
    image = engine.images.get(image_ref)
    arch = found[0].arch if found else image.labels.get(LABEL_GPU_ARCH, "sm_120").split(",")[0]
    data = static_reply(engine, image, [arch], None)
    torch = data.imports.get("torch")
    cuda = str(torch.value.get("cuda") or "") if torch is not None and torch.ok else ""
    report.checks.append(driver_for(cuda, found[0].driver if found else None))
    report.checks.append(code_check(ImageGpuCode.of(data), required_globs(image.labels, data), arch, bool(found)))
    check_shm(report, shm)
    check_hf_cache(report)
    check_cache_volume(report, engine, image)


def check_cache_volume(report: Report, engine: Engine, image: ImageRecord) -> None:
    """The compile caches' volume a serve of IMAGE mounts (:func:`builder.check.server.cache_volume`), and its size."""
    name = cache_volume(image)
    found = next((v for v in engine.volumes.list_managed() if v.name == name), None)
    if found is None:
        report.add("cache-volume", "compile caches", "pass", f"serve would make volume {name} (none yet: the first server compiles "
                   "FlashInfer's, Triton's and torch.compile's kernels into it; later ones reuse them)")
    else:
        size = "size unknown" if found.size is None or found.size < 0 else f"{found.size / 1e6:.1f} MB"
        report.add("cache-volume", "compile caches", "pass", f"serve would use volume {name} ({size} of kept compiles)")


def code_check(code: ImageGpuCode, required: list[str], arch: str, on_gpu: bool) -> Check:
    """verify's "GPU code" check, for this machine's GPU (or the image's target where there is none)."""
    check = coverage(code, required, arch)
    where = "this machine's GPU" if on_gpu else "the image's target (no GPU here)"
    check.detail = f"for {arch} ({where}): {check.detail}"
    return check


def check_shm(report: Report, shm: str = DEFAULT_SHM) -> None:
    """Memory for the server's shared memory (SHM: its --shm-size)."""
    try:
        pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        report.add("shm", "shared memory", "skip", "free memory unknown")
        return
    free, needed = pages * size, shm_bytes(shm)
    if free >= needed:
        report.add("shm", "shared memory", "pass", f"the server gets --shm-size {shm}; {free / 2**30:.0f} GiB of memory free")
    else:
        report.add("shm", "shared memory", "warn", f"the server gets --shm-size {shm}; only {free / 2**30:.1f} GiB of memory free",
                   "free memory, or serve a smaller model")


def check_hf_cache(report: Report) -> None:
    """The Hugging Face cache the server mounts (:func:`builder.check.server.hf_cache`)."""
    home = hf_cache()
    existing = next((p for p in (home, *home.parents) if p.exists()), home.anchor)
    free = shutil.disk_usage(existing).free
    if not os.access(existing, os.W_OK):
        report.add("hf-cache", "Hugging Face cache", "fail", f"{home} is not writable", "chown it, or set HF_HOME to a writable directory")
    elif free < HF_CACHE_FREE:
        report.add("hf-cache", "Hugging Face cache", "warn", f"{home}: {free / 2**30:.1f} GiB free", "free disk space (models are 2-150 GB)")
    else:
        report.add("hf-cache", "Hugging Face cache", "pass", f"{home}{'' if home.exists() else ' (made at first use)'}: {free / 2**30:.0f} GiB free")


def doctor(connect_engine: Callable[[], Engine], image_ref: str | None = None, *, nvidia_smi: str | None = None,
           shm: str = DEFAULT_SHM) -> Report:
    """All checks; CONNECT_ENGINE gives the engine (or raises EngineUnavailable), so the host checks run without one.
    SHM: the shared memory the server will get (serve's preset's)."""
    report = Report("doctor", image_ref)
    found = gpus(nvidia_smi)
    engine, error = None, None
    try:
        engine = connect_engine()
    except EngineUnavailable as exc:
        error = exc.message  # its hint is the check's own
    check_host(report, found, engine, error)
    if image_ref is not None:
        if engine is None:
            report.add("image", "image", "skip", f"{image_ref}: no engine to read it from")
        else:
            check_image(report, engine, image_ref, found, shm)  # an image that is not there: the command's error (exit 2)
    return report
