"""This machine's NVIDIA GPUs and driver, as ``nvidia-smi`` reports them (none where it is absent)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class HostGpu:
    name: str
    capability: str  # "12.0"
    driver: str  # "580.95.05"
    memory_mib: int

    @property
    def arch(self) -> str:
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
