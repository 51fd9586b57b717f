"""This machine's NVIDIA GPUs and driver, as ``nvidia-smi`` reports them (none where it is absent)."""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass

from ..contracts import platform_of_machine


def host_platform() -> str:
    """This machine's platform (linux/amd64, linux/arm64): which of a multi-platform target's images serves here."""
    return platform_of_machine(platform.machine())


@dataclass(frozen=True)
class HostGpu:
    name: str
    capability: str  # "12.0"
    driver: str  # "580.95.05"
    memory_mib: int

    @property
    def arch(self) -> str:
        """The SASS architecture of this compute capability: 12.0 -> sm_120, 12.1 -> sm_121 (GB10), 10.3 -> sm_103."""
        major, _, minor = self.capability.partition(".")
        return f"sm_{major}{minor or '0'}"


def gpus(nvidia_smi: str | None = None) -> list[HostGpu]:
    tool = nvidia_smi or shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        out = subprocess.run([tool, "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[1]:
            found.append(HostGpu(parts[0], parts[1], parts[2], int(parts[3]) if parts[3].isdigit() else 0))
    return found
