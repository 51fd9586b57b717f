"""GPU code in files, read as cuobjdump reads it: libraries, standalone cubins, fatbins, archives.

No CUDA toolkit is needed. Only ELF headers, section headers and fatbin entry headers are
read (a few bytes per kernel image), so a 1 GB ``libtorch_cuda.so`` is listed without
reading its payloads, and a file inside a wheel is read in place through the zip member
(forward reads; a backward seek re-inflates from the start).

What each kind of file holds, and whether the driver can load it:
- a shared library or executable: the ``.nv_fatbin`` section's entries (loadable). Such a
  file may also carry ``__nv_relfatbin``, relocatable device code kept for device linking,
  which the driver never loads and cuobjdump does not list; it is read only when there is
  no ``.nv_fatbin`` at all, and then the file is "relocatable", never loadable;
- a relocatable object, or an ``ar`` archive of them (``.a``): link inputs, "relocatable";
- a standalone cubin (``e_machine`` EM_CUDA, loaded with ``cuModuleLoad``, as FlashInfer does):
  one SASS entry, its architecture in ``e_flags`` — bits 0-7 in the ELF ABI version 7
  (accelerator flag 0x800), bits 8-15 in version 8 (flag 0x8) — and nvcc 13 marks its ``a``
  builds in the ``.nv.compat`` section instead (attribute 9 = 1);
- a standalone fatbin file: its entries.

Fatbin layout (little endian). Container: magic u32 0xBA55ED50, version u16, header size
u16, fat size u64. Entry: kind u16 (1 PTX, 2 ELF, 8 LTO IR) at 0, header size u32 at 4, payload
size u64 at 8, arch u32 at 28, flags u64 at 40: 0x2000/0x8000 compressed, 0x100000
arch-specific ("a": runs only on that exact capability), 0x200000 family-specific ("f").
Names follow cuobjdump: an ``f`` SASS build is listed as plain ``sm_XX`` (its machine code
is the family's, compatible like plain SASS), an ``f`` PTX keeps its ``f``. LTO IR (nvcc's
``code=lto_XX``, kind 8) is its own kind, ``lto_XX``: input for a link-time optimizing device
link (nvJitLink), which the driver never loads; cuobjdump lists it as neither SASS nor PTX.
An entry of a kind this reader does not know is an error for that file: an image's scan
(:func:`scan_tree`) names the file as unreadable and goes on with the others.

Standard library only: this module runs inside images.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Tuple

from ..contracts import GpuCode
from ..errors import FatbinError, MissingFile

FATBIN_MAGIC = 0xBA55ED50
_FATBIN_MAGIC_BYTES = struct.pack("<I", FATBIN_MAGIC)
_AR_MAGIC = b"!<arch>\n"
_KIND_PTX, _KIND_ELF, _KIND_LTO = 1, 2, 8
_FLAG_COMPRESSED = 0x2000 | 0x8000
_FLAG_ARCH_SPECIFIC = 0x100000
_FLAG_FAMILY = 0x200000
_EM_CUDA = 190
_ET_REL = 1
_SHT_NOBITS = 8
_LIBRARY_SUFFIXES = (".so", ".cubin", ".fatbin", ".a", ".o")
_IN_MEMORY = 64 << 20  # wheel members up to this size are inflated into memory


def arch_key(arch: str) -> Tuple[int, str]:
    digits = "".join(c for c in arch.split("_", 1)[-1] if c.isdigit())
    return int(digits or 0), arch


class _Window:
    """A file object over bytes [start, start + size) of another, for an archive member."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        self.f.seek(self.start + self.pos)
        data = self.f.read(max(n, 0))
        self.pos += len(data)
        return data


class _Listing:
    def __init__(self, digests: bool = False) -> None:
        self.sass: set = set()
        self.ptx: set = set()
        self.lto: set = set()
        self.entries = self.compressed = 0  # SASS and PTX entries, as cuobjdump counts them
        # With DIGESTS: (SASS name, sha256 of the entry's payload as stored) per SASS entry; the payloads are read only then
        self.digests: Optional[List[Tuple[str, str]]] = [] if digests else None

    def code(self, name: str, kind: str) -> GpuCode:
        return GpuCode(name, sorted(self.sass, key=arch_key), sorted(self.ptx, key=arch_key), self.entries, self.compressed, kind,
                       lto=sorted(self.lto, key=arch_key))


def _read(f: BinaryIO, offset: int, size: int, what: str, name: str) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise FatbinError(f"{name}: truncated {what} at offset {offset:#x} ({len(data)} of {size} bytes)")
    return data


def _sections(f: BinaryIO, ident: bytes, name: str) -> dict:
    """{section name: [(offset, size), ...]} of an ELF64 little-endian file."""
    shoff, = struct.unpack_from("<Q", ident, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
    if shoff == 0 or shnum == 0:
        return {}
    table = _read(f, shoff, shentsize * shnum, "section header table", name)
    headers = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
    if shstrndx >= shnum:
        raise FatbinError(f"{name}: corrupt ELF: section name table index {shstrndx} out of range")
    _, _, _, _, str_off, str_size = headers[shstrndx]
    strtab = _read(f, str_off, str_size, "section name table", name)
    found: dict = {}
    for sh_name, sh_type, _, _, off, size in headers:
        if sh_type != _SHT_NOBITS and size:
            found.setdefault(strtab[sh_name:strtab.find(b"\0", sh_name)].decode(errors="replace"), []).append((off, size))
    return found


def _containers(f: BinaryIO, start: int, length: int, name: str, out: _Listing) -> None:
    """Every fatbin container in [start, start + length) of F, into OUT."""
    pos, end = start, start + length
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
            if kind not in (_KIND_PTX, _KIND_ELF, _KIND_LTO) or ehsize < 48 or entry + ehsize + payload > stop:
                raise FatbinError(f"{name}: corrupt fatbin entry at offset {entry:#x} (kind {kind}, header {ehsize}, payload {payload})")
            suffix = "a" if flags & _FLAG_ARCH_SPECIFIC else "f" if flags & _FLAG_FAMILY else ""
            if kind == _KIND_LTO:  # link-time input: neither SASS nor PTX, and not counted as cuobjdump's entries
                out.lto.add(f"lto_{arch}{suffix}")
            else:
                if kind == _KIND_ELF:  # cuobjdump names family SASS as plain SASS
                    out.sass.add(f"sm_{arch}{'a' if suffix == 'a' else ''}")
                    if out.digests is not None:
                        data = _read(f, entry + ehsize, payload, "fatbin entry", name)
                        out.digests.append((f"sm_{arch}{'a' if suffix == 'a' else ''}", hashlib.sha256(data).hexdigest()))
                else:
                    out.ptx.add(f"compute_{arch}{suffix}")
                out.entries += 1
                out.compressed += bool(flags & _FLAG_COMPRESSED)
            entry += ehsize + payload
        pos = (stop + 7) & ~7


def _cubin_arch(f: BinaryIO, ident: bytes, name: str) -> str:
    abi_version = ident[8]
    flags, = struct.unpack_from("<I", ident, 48)
    if abi_version >= 8:
        arch, accelerated = (flags >> 8) & 0xFF, bool(flags & 0x8)
    else:
        arch, accelerated = flags & 0xFF, bool(flags & 0x800)
    if not accelerated:
        for off, size in _sections(f, ident, name).get(".nv.compat", []):
            accelerated = _compat_attribute(_read(f, off, size, ".nv.compat", name), 9) == 1
    return f"sm_{arch}{'a' if accelerated else ''}"


def _compat_attribute(data: bytes, wanted: int) -> int | None:
    """The value of one attribute of a .nv.compat section (entries: format u8, attribute u8, value)."""
    i = 0
    while i + 2 <= len(data):
        fmt, attr = data[i], data[i + 1]
        if fmt == 0:  # padding
            i += 1
            continue
        i += 2
        if fmt == 1:  # no value
            value = None
        elif fmt == 2:  # one byte
            value = data[i]
            i += 1
        elif fmt == 3:  # two bytes
            value, = struct.unpack_from("<H", data, i)
            i += 2
        elif fmt == 4:  # sized
            size, = struct.unpack_from("<H", data, i)
            i += 2 + size
            value = None
        else:
            return None
        if attr == wanted:
            return value
    return None


def _elf(f: BinaryIO, ident: bytes, name: str, out: _Listing) -> str:
    """Read one ELF file into OUT; returns its kind."""
    e_type, e_machine = struct.unpack_from("<HH", ident, 16)
    if e_machine == _EM_CUDA:
        out.sass.add(_cubin_arch(f, ident, name))
        out.entries += 1
        return "cubin"
    sections = _sections(f, ident, name)
    loadable, relocatable = sections.get(".nv_fatbin", []), sections.get("__nv_relfatbin", [])
    if e_type == _ET_REL:
        chosen, kind = loadable + relocatable, "relocatable"
    elif loadable:
        chosen, kind = loadable, "library"
    else:
        chosen, kind = relocatable, "relocatable"  # only device-link input: the driver loads none of it
    for off, size in sorted(chosen):
        _containers(f, off, size, name, out)
    return kind


def _archive(f: BinaryIO, name: str, out: _Listing) -> None:
    """Every ELF member of an ``ar`` archive into OUT."""
    pos = len(_AR_MAGIC)
    while True:
        f.seek(pos)
        header = f.read(60)
        if len(header) < 60:
            return
        try:
            size = int(header[48:58].decode().strip())
        except ValueError:
            raise FatbinError(f"{name}: corrupt archive member header at offset {pos:#x}") from None
        member = _Window(f, pos + 60, size)
        ident = member.read(64)
        if len(ident) == 64 and ident[:4] == b"\x7fELF" and ident[4] == 2 and ident[5] == 1:
            _elf(member, ident, f"{name}({header[:16].decode(errors='replace').strip()})", out)
        pos += 60 + size + (size & 1)


def scan_stream(f: BinaryIO, name: str) -> GpuCode:
    """The GPU code of one (seekable) file object; GpuCode.kind says whether the driver can load it."""
    out = _Listing()
    f.seek(0)  # from the start, wherever the caller left it (a spooled wheel member is left at its end)
    head = f.read(64)
    if head[:4] == b"\x7fELF" and len(head) == 64 and head[4] == 2 and head[5] == 1:
        kind = _elf(f, head, name, out)
    elif head[:8] == _AR_MAGIC:
        _archive(f, name, out)
        kind = "relocatable"
    elif head[:4] == _FATBIN_MAGIC_BYTES:
        f.seek(0, 2)
        _containers(f, 0, f.tell() if hasattr(f, "tell") else 0, name, out)
        kind = "fatbin"
    else:
        kind = "library"  # not a GPU binary at all: no code
    return out.code(name, kind)


def scan_file(path: Path) -> GpuCode:
    with open(path, "rb") as f:
        return scan_stream(f, str(path))


def sass_digests(path: Path) -> List[Tuple[str, str]]:
    """(SASS name, sha256 of its payload) for each SASS entry of a library's loadable fatbin, sorted: two builds' GPU code
    compared entry by entry (a library's only; reads every payload)."""
    out = _Listing(digests=True)
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] == b"\x7fELF" and len(head) == 64 and head[4] == 2 and head[5] == 1:
            _elf(f, head, str(path), out)
    return sorted(out.digests or [])


def may_hold_gpu_code(name: str) -> bool:
    """Files the reader opens: shared objects, cubins, fatbins, archives, objects."""
    base = os.path.basename(name)
    return base.endswith(_LIBRARY_SUFFIXES) or ".so." in base


def scan_wheel(path: Path) -> Iterator[GpuCode]:
    """Each GPU file of a wheel, read without unpacking the wheel.

    A deflated member can only be read forwards (a backward seek inflates it again from the
    start), and the section table sits at a file's end, after the sections: so a member is
    inflated once, into memory when small, into an anonymous temporary file when large.
    """
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise FatbinError(f"{path}: not a wheel (bad zip file)") from None
    with zf:
        for info in zf.infolist():
            if info.is_dir() or not may_hold_gpu_code(info.filename):
                continue
            with zf.open(info) as member:
                if info.file_size <= _IN_MEMORY:
                    yield scan_stream(io.BytesIO(member.read()), f"{path}!{info.filename}")
                    continue
                with tempfile.TemporaryFile() as spool:
                    shutil.copyfileobj(member, spool, 1 << 20)
                    yield scan_stream(spool, f"{path}!{info.filename}")


def scan_tree(root: Path) -> Iterator[GpuCode]:
    """Every GPU file under ROOT. A file this reader cannot read (corrupt, or an entry of a kind it does not know) comes
    back as "unreadable", with why: one file never stops the scan of the rest."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath, fn)
            if p.is_symlink() or not p.is_file():
                continue
            try:
                if fn.endswith(".whl"):
                    yield from scan_wheel(p)
                elif may_hold_gpu_code(fn):
                    yield scan_file(p)
            except FatbinError as exc:
                yield GpuCode(str(p), kind="unreadable", error=str(exc))


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
    """How a GPU of ``target`` (e.g. sm_120) runs this file: native, ptx-jit, none, or link-only.

    SASS runs on its own capability and, plain or family-built, on later minor versions of
    the same major (sm_120 code on sm_121); ``a`` SASS only on its exact capability. PTX is
    JIT-compiled for any later GPU (``f`` PTX within its family, ``a`` PTX for its exact
    capability). Relocatable code (``__nv_relfatbin``, objects, archives) is never loaded.
    """
    if code.kind == "unreadable":
        return "none"
    if code.kind == "relocatable":
        return "link-only" if code.has_gpu_code or code.lto else "none"
    want = int("".join(c for c in target if c.isdigit()))
    for sass in code.sass:
        if arch_key(sass)[0] == want:
            return "native"
    for sass in code.sass:
        major, minor = divmod(arch_key(sass)[0], 10)
        if not sass.endswith("a") and major == want // 10 and minor <= want % 10:
            return "native"  # same major, lower minor: binary compatible
    for p in code.ptx:
        arch = arch_key(p)[0]
        if (p.endswith("a") and arch == want) or (p.endswith("f") and arch // 10 == want // 10 and arch <= want) \
                or (not p.endswith(("a", "f")) and arch <= want):
            return "ptx-jit"
    return "none"
