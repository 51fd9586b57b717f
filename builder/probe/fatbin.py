"""GPU code in ELF files: the SASS and PTX architectures of every ``.nv_fatbin`` entry.

No CUDA toolkit is needed. Only ELF headers, section headers and fatbin entry headers
are read (a few bytes per kernel image), so a 1 GB ``libtorch_cuda.so`` is listed
without reading its payloads, and a library inside a wheel is read in place through
the zip member (forward reads; a backward seek re-inflates from the start).

Layout (little endian). Container: magic u32 0xBA55ED50, version u16, header size
u16, fat size u64. Entry: kind u16 (1 PTX, 2 ELF) at 0, header size u32 at 4,
payload size u64 at 8, arch u32 at 28, flags u64 at 40: 0x2000/0x8000 compressed,
0x100000 arch-specific ("a", e.g. sm_90a), 0x200000 family-specific ("f").

Standard library only: this module runs inside images.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterator

from ..contracts import GpuCode
from ..errors import FatbinError, MissingFile

FATBIN_MAGIC = 0xBA55ED50
_KIND_PTX, _KIND_ELF = 1, 2
_FLAG_COMPRESSED = 0x2000 | 0x8000
_FLAG_ARCH_SPECIFIC = 0x100000
_FLAG_FAMILY = 0x200000
_SECTIONS = (".nv_fatbin", "__nv_relfatbin")


def arch_key(arch: str) -> tuple[int, str]:
    digits = "".join(c for c in arch.split("_", 1)[-1] if c.isdigit())
    return int(digits or 0), arch


def _suffix(flags: int) -> str:
    return "a" if flags & _FLAG_ARCH_SPECIFIC else "f" if flags & _FLAG_FAMILY else ""


def _read(f: BinaryIO, offset: int, size: int, what: str, name: str) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise FatbinError(f"{name}: truncated {what} at offset {offset:#x} ({len(data)} of {size} bytes)")
    return data


def _fatbin_sections(f: BinaryIO, name: str) -> list[tuple[int, int]]:
    """(offset, size) of each fatbin section of an ELF64 file; [] for a file that is not ELF64."""
    ident = f.read(64)
    if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
        return []
    shoff, = struct.unpack_from("<Q", ident, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
    if shoff == 0 or shnum == 0:
        return []
    table = _read(f, shoff, shentsize * shnum, "section header table", name)
    headers = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
    if shstrndx >= shnum:
        raise FatbinError(f"{name}: corrupt ELF: section name table index {shstrndx} out of range")
    _, _, _, _, str_off, str_size = headers[shstrndx]
    strtab = _read(f, str_off, str_size, "section name table", name)
    found = []
    for sh_name, sh_type, _, _, off, size in headers:
        end = strtab.find(b"\0", sh_name)
        if strtab[sh_name:end].decode(errors="replace") in _SECTIONS and sh_type != 8 and size:  # 8: NOBITS
            found.append((off, size))
    return sorted(found)


def scan_stream(f: BinaryIO, name: str) -> GpuCode:
    """List the GPU code of one (seekable) file object."""
    sass: set[str] = set()
    ptx: set[str] = set()
    entries = compressed = 0
    for sec_off, sec_size in _fatbin_sections(f, name):
        pos, end = sec_off, sec_off + sec_size
        while pos + 16 <= end:
            magic, _version, hsize, fat_size = struct.unpack("<IHHQ", _read(f, pos, 16, "fatbin header", name))
            if magic != FATBIN_MAGIC:
                if magic == 0:  # alignment padding between containers
                    pos += 8
                    continue
                raise FatbinError(f"{name}: corrupt fatbin: bad magic {magic:#x} at offset {pos:#x}")
            entry, stop = pos + hsize, pos + hsize + fat_size
            if stop > end:
                raise FatbinError(f"{name}: truncated fatbin at offset {pos:#x}: it claims {fat_size} bytes, the section has {end - entry}")
            while entry < stop:
                head = _read(f, entry, 48, "fatbin entry header", name)
                kind, _v, ehsize, payload = struct.unpack_from("<HHIQ", head, 0)
                arch, = struct.unpack_from("<I", head, 28)
                flags, = struct.unpack_from("<Q", head, 40)
                if kind not in (_KIND_PTX, _KIND_ELF) or ehsize < 48 or entry + ehsize + payload > stop:
                    raise FatbinError(f"{name}: corrupt fatbin entry at offset {entry:#x} (kind {kind}, header {ehsize}, payload {payload})")
                target = f"{arch}{_suffix(flags)}"
                if kind == _KIND_ELF:
                    sass.add("sm_" + target)
                else:
                    ptx.add("compute_" + target)
                entries += 1
                compressed += bool(flags & _FLAG_COMPRESSED)
                entry += ehsize + payload
            pos = (stop + 7) & ~7
    return GpuCode(name, sorted(sass, key=arch_key), sorted(ptx, key=arch_key), entries, compressed)


def scan_file(path: Path) -> GpuCode:
    with open(path, "rb") as f:
        return scan_stream(f, str(path))


def scan_wheel(path: Path) -> Iterator[GpuCode]:
    """Each shared object of a wheel, read in place (no unpacking to disk)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise FatbinError(f"{path}: not a wheel (bad zip file)") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir() or not _maybe_library(info.filename):
                continue
            with zf.open(info) as member:
                yield scan_stream(member, f"{path}!{info.filename}")


def _maybe_library(name: str) -> bool:
    base = os.path.basename(name)
    return base.endswith(".so") or ".so." in base


def scan_tree(root: Path) -> Iterator[GpuCode]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath, fn)
            if p.is_symlink() or not p.is_file():
                continue
            if fn.endswith(".whl"):
                yield from scan_wheel(p)
            elif _maybe_library(fn):
                yield scan_file(p)


def scan_path(path: Path) -> Iterator[GpuCode]:
    if path.is_dir():
        yield from scan_tree(path)
    elif path.suffix == ".whl":
        yield from scan_wheel(path)
    elif path.is_file():
        yield scan_file(path)
    else:
        raise MissingFile(f"{path}: no such file or directory")


def verdict(code: GpuCode, target: str) -> str:
    """How a GPU of ``target`` (e.g. sm_120) runs this file: 'native', 'ptx-jit' or 'none'.

    ``a``/``f`` SASS runs only on the exact capability (an ``f`` build also on later
    members of its family, which this does not model); PTX JITs forward to any newer GPU.
    """
    want = int("".join(c for c in target if c.isdigit()))
    for sass in code.sass:
        if arch_key(sass)[0] == want:
            return "native"
    for sass in code.sass:
        major, minor = divmod(arch_key(sass)[0], 10)
        if not sass.endswith(("a", "f")) and major == want // 10 and minor <= want % 10:
            return "native"  # same major, lower minor: binary compatible
    if any(arch_key(p)[0] <= want and not p.endswith(("a", "f")) for p in code.ptx):
        return "ptx-jit"
    return "none"
