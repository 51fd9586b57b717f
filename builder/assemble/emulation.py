"""Running another CPU architecture's code here: the kernel's binfmt_misc handlers (QEMU's user-mode emulator).

An arm64 image's build steps, smoke tests and probe run arm64 binaries. On an x86-64 machine the
kernel hands them to QEMU's user-mode emulator, through a binfmt_misc handler registered with the
F flag (the emulator is opened when registered, so it works inside containers, which have none).
Without one, no step can run: one line says what to install, before anything is built. The emulator must
be QEMU 9.1 or later: 7.2 (Debian 12's) dies with SIGSEGV importing torch 2.14's aarch64 build, so an
image it built could be neither smoke-tested nor verified (ci/bootstrap-host.sh installs Debian 13's).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from ..contracts import PLATFORMS
from ..errors import ToolMissing

INSTALL = "run ci/bootstrap-host.sh as root (it installs QEMU's user-mode emulator and registers its handler)"
OLDEST_QEMU = (9, 1)


def binfmt_dir() -> Path:
    return Path(os.environ.get("SGLBUILD_BINFMT_DIR", "/proc/sys/fs/binfmt_misc"))


def check_can_run(platform: str, native: str) -> str:
    """Nothing when PLATFORM is the engine's own (NATIVE); else the handler that runs it, or a ToolMissing saying what to install."""
    if platform == native:
        return "native"
    machine = PLATFORMS.get(platform, (platform.split("/")[-1],))[0]
    directory = binfmt_dir()
    if not (directory / "status").exists():
        raise ToolMissing(f"this machine cannot run {platform} code: binfmt_misc is not mounted at {directory}",
                          f"mount it (mount -t binfmt_misc binfmt_misc {directory}) and {INSTALL}")
    for entry in sorted(directory.iterdir()):
        if entry.name in ("register", "status"):
            continue
        text = entry.read_text(errors="replace")
        if f"-{machine}" not in entry.name and f"{machine}" not in text.split("interpreter", 1)[-1].split("\n", 1)[0]:
            continue
        if not text.startswith("enabled"):
            raise ToolMissing(f"this machine cannot run {platform} code: its handler {entry.name} is disabled",
                              f"enable it (update-binfmts --enable {entry.name})")
        flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
        if "F" not in flags:
            raise ToolMissing(f"this machine cannot run {platform} code in containers: handler {entry.name} has no F flag",
                              f"{INSTALL}; Debian's registers its handlers with F")
        _check_version(entry.name, next((ln.split(" ", 1)[1].strip() for ln in text.splitlines() if ln.startswith("interpreter ")), ""))
        return entry.name
    raise ToolMissing(f"this machine cannot run {platform} code: no binfmt_misc handler for {machine}", INSTALL)


def _check_version(name: str, interpreter: str) -> None:
    """The handler's QEMU is new enough to run torch's aarch64 build (when it can be asked: it answers --version)."""
    try:
        out = subprocess.run([interpreter, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    m = re.search(r"version (\d+)\.(\d+)", out)
    if m and (int(m.group(1)), int(m.group(2))) < OLDEST_QEMU:
        raise ToolMissing(f"the {name} handler is QEMU {m.group(1)}.{m.group(2)}, which dies importing torch's aarch64 build "
                          f"(QEMU {OLDEST_QEMU[0]}.{OLDEST_QEMU[1]} or later runs it)", INSTALL)
