"""FlashInfer's modules built ahead of time: per architecture, prebuilt or compiled at first use.

The authority is the image's own FlashInfer, asked with its JIT turned off which file it would load for each declared
module (builder.probe.flashinfer_aot, run by the probe), and the fatbin reader on that file: a module is prebuilt for
an architecture only when FlashInfer resolves it to a file and that file carries SASS that runs on the architecture
(FlashInfer compiles 10.0 as sm_100a, which runs on exactly sm_100; the fatbin reader's verdict decides). An image
that declares none gets a feature row saying its modules compile at first use, and no check.
"""

from __future__ import annotations

from collections import Counter

from ..contracts import AotModule, GpuCode, StaticReply
from ..probe.fatbin import verdict
from .report import Check, Feature

FEATURE = "flashinfer modules prebuilt"


def _missing(modules: list[AotModule], arch: str) -> list[str]:
    """Why each module not prebuilt for ARCH is not: no file FlashInfer resolves, or a file without ARCH's SASS."""
    out = []
    for m in modules:
        if m.path is None:
            out.append(f"{m.name} (no prebuilt file)")
        elif verdict(GpuCode(m.path, m.sass), arch) != "native":  # FlashInfer builds 10.0 as sm_100a: it runs on sm_100
            out.append(f"{m.name} (its file has SASS for {', '.join(m.sass) or 'nothing'}, not {arch})")
    return out


def _kinds(modules: list[AotModule]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in Counter(m.kind for m in modules).items())


def aot_check(data: StaticReply, arch: str) -> Check | None:
    """verify's check for ARCH where the image declares modules ahead of time (None where it declares none)."""
    if data.flashinfer_aot is None:
        return None
    if not data.flashinfer_aot.ok:
        return Check("flashinfer-aot", "FlashInfer modules", "fail", f"the image's FlashInfer could not resolve its declared modules: "
                     f"{data.flashinfer_aot.error}", "rebuild the image; if it persists, the declaration names modules this FlashInfer "
                     "does not make", arch)
    modules = data.aot_modules or []
    missing = _missing(modules, arch)
    if missing:
        return Check("flashinfer-aot", "FlashInfer modules", "fail",
                     f"{len(missing)} of {len(modules)} declared modules compile at first use on {arch}: {'; '.join(missing[:3])}"
                     + (f"; and {len(missing) - 3} more" if len(missing) > 3 else ""),
                     "rebuild the image (its flashinfer-aot stage builds them), or drop the shape from [flashinfer_aot]", arch)
    return Check("flashinfer-aot", "FlashInfer modules", "pass",
                 f"{len(modules)} declared modules ({_kinds(modules)}) load prebuilt on {arch} with FlashInfer's JIT off", arch=arch)


def aot_feature(data: StaticReply, arch: str) -> Feature | None:
    """The feature row for ARCH: "prebuilt" or "compiles at first use" (None: no FlashInfer in the image)."""
    if "flashinfer-python" not in data.dists:
        return None
    if data.flashinfer_aot is None:
        return Feature(FEATURE, False, "compiles at first use: the image declares no FlashInfer module ahead of time")
    check = aot_check(data, arch)
    assert check is not None  # the image declares modules
    if check.status == "pass":
        return Feature(FEATURE, True, f"prebuilt: {check.detail}")
    return Feature(FEATURE, False, f"compiles at first use: {check.detail}")
