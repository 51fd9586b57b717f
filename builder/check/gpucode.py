"""The GPU code an image carries, read once from the static probe and judged per architecture.

verify, doctor, the feature table and a derived target's evidence all read it here, so they
cannot disagree: the files are keyed by their path under site-packages, a glob is matched one
way, and the libraries an image must carry native code in (its ``require-native`` label, or,
for an image without the label, torch's CUDA library where torch is installed) are judged one
way, a glob that matches nothing included.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..contracts import LABEL_REQUIRE_NATIVE, GpuCode, StaticReply
from ..probe.fatbin import arch_key, verdict
from .report import Check

# What an image must carry native code for when it does not say (its label): torch's own CUDA library.
DEFAULT_REQUIRED = ("torch/lib/libtorch_cuda.so",)


def relative(path: str, site_packages: list[str]) -> str:
    """PATH under the first of SITE_PACKAGES that holds it (else PATH as it is)."""
    for sp in site_packages:
        if path.startswith(sp.rstrip("/") + "/"):
            return path[len(sp.rstrip("/")) + 1:]
    return path


@dataclass(frozen=True)
class ImageGpuCode:
    """Every file with GPU code under an image's site-packages, by its path there."""

    files: dict[str, GpuCode]

    @classmethod
    def of(cls, reply: StaticReply) -> "ImageGpuCode":
        return cls({relative(c.path, reply.site_packages): c for c in reply.libraries})

    def matching(self, globs: list[str] | tuple[str, ...], kinds: tuple[str, ...] | None = None) -> dict[str, GpuCode]:
        return {rel: c for rel, c in self.files.items()
                if any(fnmatch.fnmatch(rel, g) for g in globs) and (kinds is None or c.kind in kinds)}

    @property
    def libraries(self) -> dict[str, GpuCode]:
        """The shared objects the driver loads (not cubins, fatbins or device-link code)."""
        return {rel: c for rel, c in self.files.items() if c.kind == "library"}

    def verdicts(self, arch: str) -> dict[str, str]:
        return {rel: verdict(c, arch) for rel, c in self.libraries.items()}

    def counts(self, arch: str) -> dict[str, int]:
        verdicts = list(self.verdicts(arch).values())
        return {v: verdicts.count(v) for v in ("native", "ptx-jit", "none")}

    def summary(self, arch: str) -> str:
        """One line: how many libraries run on ARCH and how; standalone cubins; device-link code."""
        verdicts, counts = self.verdicts(arch), self.counts(arch)
        none = sorted(rel for rel, v in verdicts.items() if v == "none")
        line = (f"{len(verdicts)} libraries with GPU code: {counts['native']} native, {counts['ptx-jit']} via PTX JIT, "
                f"{counts['none']} none")
        if none:
            line += f" ({', '.join(PurePosixPath(n).name for n in none[:6])}{' ...' if len(none) > 6 else ''})"
        cubins = [c for c in self.files.values() if c.kind in ("cubin", "fatbin")]
        if cubins:
            ready = sum(verdict(c, arch) == "native" for c in cubins)
            archs = sorted({a for c in cubins for a in c.sass}, key=arch_key)
            line += f"; {len(cubins)} standalone cubins, {ready} for {arch} ({' '.join(archs)})"
        static = sorted(PurePosixPath(rel).name for rel, c in self.files.items() if c.kind == "relocatable")
        if static:
            line += f"; {len(static)} with device-link code only, never loaded ({', '.join(static[:3])})"
        unreadable = sorted(rel for rel, c in self.files.items() if c.kind == "unreadable")
        if unreadable:
            line += f"; {len(unreadable)} unreadable ({'; '.join(self.files[r].error or r for r in unreadable[:2])})"
        return line

    def missing_native(self, required: list[str] | tuple[str, ...], arch: str) -> list[str]:
        """Why each REQUIRED glob fails on ARCH: it matches no library, or a library it matches has no ARCH SASS."""
        problems = []
        verdicts = self.verdicts(arch)
        for glob_ in required:
            hits = self.matching([glob_], ("library",))
            unreadable = self.matching([glob_], ("unreadable",))
            problems += [f"{rel} cannot be read: {c.error}" for rel, c in sorted(unreadable.items())]
            if not hits and not unreadable:
                problems.append(f"{glob_}: no library with GPU code matches")
            for rel, c in sorted(hits.items()):
                if verdicts[rel] != "native":
                    have = " ".join(sorted(c.sass, key=arch_key)) or "no SASS"
                    problems.append(f"{rel} has no {arch} SASS ({have})")
        return problems


def required_globs(labels: dict[str, str], reply: StaticReply) -> list[str]:
    """The libraries that must carry native code: the image's label; without one, torch's CUDA library where torch is installed."""
    if LABEL_REQUIRE_NATIVE in labels:
        return list(json.loads(labels[LABEL_REQUIRE_NATIVE] or "[]"))
    return list(DEFAULT_REQUIRED) if "torch" in reply.dists else []


def coverage(code: ImageGpuCode, required: list[str], arch: str) -> Check:
    """The "GPU code" check on ARCH: every required library native, with the whole image's summary."""
    problems, summary = code.missing_native(required, arch), code.summary(arch)
    if problems:
        return Check("gpu-code", "GPU code", "fail", f"{'; '.join(problems[:4])}; {summary}", arch=arch,
                     hint=f"use an image built for {arch}, or a build of these libraries with {arch} code")
    return Check("gpu-code", "GPU code", "pass", summary, arch=arch)
