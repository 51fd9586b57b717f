"""What an image must not carry: its own copy of the NVIDIA driver's libraries where the loader looks first.

The NVIDIA container runtime mounts the host driver's ``libcuda.so.1`` (and ``libnvidia-ml.so.1``,
``libnvidia-ptxjitcompiler.so.1``, ...) into the container. A copy in the image that ld.so finds
before the mount (CUDA's link-time stub copied as ``.so.1``, a directory on ``LD_LIBRARY_PATH`` or
in ``/etc/ld.so.conf.d``, a GPU library's RPATH/RUNPATH) is loaded instead, and a perfectly good
host fails with "CUDA driver version is insufficient for CUDA runtime version" or "no CUDA-capable
device". The probe (:mod:`builder.probe.loader`) follows ld.so's rules in the image; this judges.

CUDA's forward-compatibility package (``cuda-compat``) is the one legitimate copy, and only on
data-center GPUs with a driver branch NVIDIA supports for it: on GeForce and RTX workstation
cards (and GB10) CUDA refuses it ("forward compatibility was attempted on non supported HW").
"""

from __future__ import annotations

from ..contracts import StaticReply
from .report import Check

# Architectures of NVIDIA's data-center GPUs, where forward compatibility is supported (A100/A30, H100/H200,
# B200/GB200, B300/GB300). Consumer and workstation parts share some of these numbers' neighbours, never these.
DATA_CENTER = {"sm_80", "sm_90", "sm_90a", "sm_100", "sm_100a", "sm_103", "sm_103a"}


def driver_check(data: StaticReply, arch: str) -> Check:
    """The "driver libraries" check on ARCH."""
    answer = data.driver
    if not answer:
        return Check("driver-libs", "driver libraries", "skip", "the probe did not look (an older probe reply)", arch=arch)
    libdir = answer.get("runtime_libdir", "?")
    shadows = [(name, s) for name, info in answer.get("libraries", {}).items() for s in info.get("shadows", [])]
    confirmed = {name: info.get("ldd") for name, info in answer.get("libraries", {}).items() if info.get("ldd")}
    plain = [(n, s) for n, s in shadows if not s.get("compat")]
    compat = [(n, s) for n, s in shadows if s.get("compat")]
    if plain:
        name, first = plain[0]
        seen = f"; the image's ldd resolves {name} to {confirmed[name]} now" if name in confirmed else ""
        more = f" (and {len(plain) - 1} more)" if len(plain) > 1 else ""
        return Check("driver-libs", "driver libraries", "fail",
                     f"{first['path']} would be loaded as {name} instead of the host driver's: {first['why']} puts it before "
                     f"the NVIDIA runtime's mount in {libdir}{more}{seen}",
                     "remove the copy from the image, or take its directory off that search path "
                     "(the NVIDIA container runtime provides the driver's libraries)", arch=arch)
    if compat:
        name, first = compat[0]
        where = f"{first['path']} ({first['why']})"
        if arch in DATA_CENTER:
            return Check("driver-libs", "driver libraries", "warn",
                         f"{name} comes from CUDA's forward-compatibility package, {where}: legitimate on data-center GPUs "
                         f"({arch}) only with a driver branch NVIDIA supports for forward compatibility",
                         "check the host driver's branch against NVIDIA's forward-compatibility table", arch=arch)
        return Check("driver-libs", "driver libraries", "fail",
                     f"{name} comes from CUDA's forward-compatibility package, {where}: {arch} GPUs (GeForce, RTX "
                     f"workstation, GB10) do not support forward compatibility; CUDA fails with 'forward compatibility "
                     f"was attempted on non supported HW'",
                     "leave cuda-compat out of images for these GPUs and use a driver as new as the image's CUDA", arch=arch)
    copies = answer.get("copies") or []
    note = (f"; the image also carries {', '.join(copies[:3])}{' ...' if len(copies) > 3 else ''}, which the loader reaches only "
            f"after the mount, or not at all") if copies else ""
    names = ", ".join(answer.get("libraries", {}))
    return Check("driver-libs", "driver libraries", "pass",
                 f"{names} come from the NVIDIA container runtime (mounted in {libdir}): no copy in the image is found "
                 f"first{note}", arch=arch)
