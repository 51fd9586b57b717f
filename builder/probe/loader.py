"""Where the dynamic loader would find the NVIDIA driver's libraries in this image, on a GPU host.

The NVIDIA container runtime mounts the host driver's user-space libraries (``libcuda.so.1``,
``libnvidia-ml.so.1``, ``libnvidia-ptxjitcompiler.so.1``, ...) into the image's library
directory (``/usr/lib/<multiarch>``, else ``/usr/lib64``) and runs the image's ldconfig. A copy
the image carries wins over the mount wherever ld.so looks before that directory:

1. a directory of a library's DT_RPATH (when it has no DT_RUNPATH);
2. ``LD_LIBRARY_PATH`` (the image's ENV);
3. a directory of a library's DT_RUNPATH;
4. ld.so.cache, which ldconfig builds in the order of ``/etc/ld.so.conf`` (its includes sorted),
   registering each library under its SONAME: a directory listed before the runtime's, or a
   regular file with the driver's name in the runtime's directory itself (the runtime's link
   cannot replace it).

This follows each rule with the image's own files (ELF dynamic sections read here, standard
library only) and, as a cross-check, asks the image's ``ldd`` where it resolves each name now.
Copies in CUDA's forward-compatibility directories (``cuda-compat``) are marked as such.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import struct
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .fatbin import _sections

DRIVER_SONAMES = ("libcuda.so.1", "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1", "libnvidia-nvvm.so.4",
                  "libcudadebugger.so.1")
_DT_NEEDED, _DT_SONAME, _DT_RPATH, _DT_RUNPATH = 1, 14, 15, 29


def elf_dynamic(path: str) -> Optional[Dict[str, object]]:
    """SONAME, NEEDED, RPATH and RUNPATH of an ELF64 little-endian shared object (None: not one)."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
                return None
            sections = _sections(f, ident, path)
            if ".dynamic" not in sections or ".dynstr" not in sections:
                return None
            (doff, dsize), (soff, ssize) = sections[".dynamic"][0], sections[".dynstr"][0]
            f.seek(doff)
            dynamic = f.read(dsize)
            f.seek(soff)
            strtab = f.read(ssize)
    except (OSError, ValueError):
        return None

    def string(offset: int) -> str:
        return strtab[offset:strtab.find(b"\0", offset)].decode(errors="replace")

    out: Dict[str, object] = {"soname": None, "needed": [], "rpath": [], "runpath": []}
    for i in range(0, len(dynamic) - 15, 16):
        tag, value = struct.unpack_from("<qQ", dynamic, i)
        if tag == 0:
            break
        if tag == _DT_NEEDED:
            out["needed"].append(string(value))  # type: ignore[union-attr]
        elif tag == _DT_SONAME:
            out["soname"] = string(value)
        elif tag in (_DT_RPATH, _DT_RUNPATH):
            out["rpath" if tag == _DT_RPATH else "runpath"] = [p for p in string(value).split(":") if p]
    return out


def _expand(entry: str, origin: str) -> str:
    return re.sub(r"\$(ORIGIN|\{ORIGIN\})", origin, entry)


def multiarch() -> str:
    machine = platform.machine()
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "arm64": "aarch64-linux-gnu"}.get(machine, machine + "-linux-gnu")


def runtime_libdir() -> str:
    """Where the NVIDIA container runtime mounts the driver's libraries in this image."""
    for candidate in (f"/usr/lib/{multiarch()}", "/usr/lib64"):
        if os.path.isdir(candidate):
            return candidate
    return "/usr/lib"


def ld_conf_dirs(conf: str = "/etc/ld.so.conf") -> List[Tuple[str, str]]:
    """(directory, the file that lists it) in ldconfig's order: ld.so.conf with its includes expanded in place."""
    out: List[Tuple[str, str]] = []

    def read(path: str, depth: int = 0) -> None:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("hwcap"):
                continue
            if line.startswith("include") and depth < 8:
                for pattern in line.split()[1:]:
                    pattern = pattern if pattern.startswith("/") else os.path.join(os.path.dirname(path), pattern)
                    for included in sorted(glob.glob(pattern)):
                        read(included, depth + 1)
                continue
            for d in re.split(r"[\s:,]+", line):
                if d.startswith("/"):
                    out.append((os.path.normpath(d), path))

    read(conf)
    return out


def cache_order() -> List[Tuple[str, str]]:
    """The directories ldconfig scans, in order, each with why: its conf file, or ldconfig's own trusted list."""
    seen, order = set(), []
    trusted = [f"/lib/{multiarch()}", f"/usr/lib/{multiarch()}", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    for d, why in [*ld_conf_dirs(), *((t, "ldconfig's trusted directories") for t in trusted)]:
        real = os.path.realpath(d)
        if real not in seen and os.path.isdir(d):
            seen.add(real)
            order.append((d, why))
    return order


def _compat(path: str) -> bool:
    """A file of CUDA's forward-compatibility package (cuda-compat-X-Y), by its directory or its owner."""
    if "/compat/" in path and "cuda" in path:
        return True
    real = os.path.realpath(path)
    for listing in glob.glob("/var/lib/dpkg/info/cuda-compat*.list"):
        try:
            if real in Path(listing).read_text().splitlines() or path in Path(listing).read_text().splitlines():
                return True
        except OSError:
            pass
    return False


def _named(directory: str, soname: str) -> List[str]:
    """Files in DIRECTORY ldconfig would register under SONAME: named so, or lib*.so* with that DT_SONAME."""
    stem = soname.split(".so", 1)[0]
    found = []
    for path in sorted(glob.glob(os.path.join(directory, stem + ".so*"))):
        if os.path.basename(path) == soname or (elf_dynamic(os.path.realpath(path)) or {}).get("soname") == soname:
            found.append(path)
    return found


def _ldd_paths(library: str) -> Dict[str, Optional[str]]:
    """What the image's own ldd resolves LIBRARY's NEEDED driver libraries to, now (None: not found)."""
    try:
        out = subprocess.run(["ldd", library], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found: Dict[str, Optional[str]] = {}
    for name, where in re.findall(r"^\s*(\S+) => (.+?)(?: \(0x[0-9a-f]+\))?$", out, re.M):
        if name in DRIVER_SONAMES:
            found[name] = None if where.strip() == "not found" else where.strip()
    return found


def driver_libraries(libraries: List[str]) -> Dict[str, object]:
    """For each driver library: the image's copies the loader would take before the runtime's mount, and why.

    LIBRARIES: the image's GPU libraries (their RPATH and RUNPATH are searched first, and they are what
    loads the driver).
    """
    libdir = runtime_libdir()
    env_dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dynamics = {lib: elf_dynamic(lib) for lib in libraries}
    order = cache_order()
    before_runtime = []
    for d, why in order:
        if os.path.realpath(d) == os.path.realpath(libdir):
            break
        before_runtime.append((d, why))
    answer: Dict[str, object] = {"runtime_libdir": libdir, "libraries": {}, "copies": stray_copies()}
    needing = {name: next((lib for lib, dyn in dynamics.items() if dyn and name in dyn["needed"]), None) for name in DRIVER_SONAMES}
    for name in DRIVER_SONAMES:
        shadows: List[Dict[str, object]] = []

        def add(path: str, why: str) -> None:
            real = os.path.realpath(path)
            if os.path.exists(path) and not any(os.path.realpath(str(s["path"])) == real for s in shadows):
                shadows.append({"path": path, "why": why, "compat": _compat(path)})

        for lib, dyn in dynamics.items():
            if dyn and dyn["rpath"] and not dyn["runpath"]:
                for entry in dyn["rpath"]:  # type: ignore[union-attr]
                    add(os.path.join(_expand(entry, os.path.dirname(lib)), name), f"the DT_RPATH of {lib} ({entry})")
        for d in env_dirs:
            add(os.path.join(d, name), f"LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH')} (the image's ENV)")
        for lib, dyn in dynamics.items():
            for entry in (dyn or {}).get("runpath") or []:  # type: ignore[union-attr]
                add(os.path.join(_expand(entry, os.path.dirname(lib)), name), f"the DT_RUNPATH of {lib} ({entry})")
        for d, why in before_runtime:
            for path in _named(d, name):
                add(path, f"{d}, listed by {why}, which ldconfig reads before the runtime's {libdir}")
        own = os.path.join(libdir, name)
        if os.path.isfile(own) and not os.path.islink(own):
            add(own, f"a regular file in the runtime's own directory {libdir}, which its link to the driver cannot replace")
        lib = needing.get(name)
        answer["libraries"][name] = {  # type: ignore[index]
            "shadows": shadows,
            "ldd": _ldd_paths(lib).get(name) if lib else None,
            "checked_with": lib,
        }
    return answer


def stray_copies(names: Tuple[str, ...] = DRIVER_SONAMES, roots: Tuple[str, ...] = ("/opt", "/usr/local", "/usr/lib", "/lib")) -> List[str]:
    """Every file under ROOTS named like a driver library (libcuda.so, libcuda.so.1, ...): what the image carries."""
    stems = tuple(n.split(".so", 1)[0] + ".so" for n in names)
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in ("proc", "sys")]
            found += [os.path.join(dirpath, f) for f in filenames if f.startswith(stems)]
    return sorted(set(found))
