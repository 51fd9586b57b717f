"""Reading what ``docker save`` exports: layers file by file, and an image's manifest.

Exports are read as a stream, never written to disk. Their layout differs between engines
and image stores (``ID/layer.tar`` with a ``manifest.json`` on Docker 20.10; an OCI layout of
``blobs/sha256/...``, gzip-compressed on the containerd image store, on Docker 25 and later),
so no file name is trusted: every member that is a layer tar, compressed or not, is read, and
it is known by the sha256 of its uncompressed bytes, which is its diff ID. A layer that cannot
be found in the export is an error, never an empty layer: a comparison that read nothing must
not say "identical".
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

from ..errors import EngineError
from .records import LayerEntry

if TYPE_CHECKING:
    from . import Engine

_CHUNK = 1 << 20
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


class StreamReader:
    """A file object over a stream of chunks, with bytes pushed back in front (to peek)."""

    def __init__(self, chunks: Iterator[bytes], head: bytes = b"") -> None:
        self.chunks, self.buf = chunks, head

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            try:
                self.buf += next(self.chunks)
            except StopIteration:
                break
        if n < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out


class _HashingReader:
    """Reads a stream through, hashing every byte (a layer tar's sha256 is its diff ID)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.hash = raw, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(_CHUNK):
            pass
        return "sha256:" + self.hash.hexdigest()


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def read_layer(member_stream: BinaryIO) -> tuple[str, dict[str, LayerEntry]] | None:
    """(diff ID, files) of one export member if it is a layer tar (plain or gzip), else None."""
    head = member_stream.read(512)
    if head[:1] in (b"{", b"["):
        return None  # a manifest, config or index
    raw: BinaryIO = StreamReader(_chunks(member_stream), head)  # type: ignore[assignment]
    if head[:2] == _GZIP:
        raw = gzip.GzipFile(fileobj=raw)  # type: ignore[arg-type]
    elif head[:4] == _ZSTD:
        raise EngineError("the engine exported a zstd-compressed layer, which this reader cannot decompress",
                          "use gzip or uncompressed layers (the engine's defaults)")
    reader = _HashingReader(raw)
    entries: dict[str, LayerEntry] = {}
    try:
        with tarfile.open(fileobj=reader, mode="r|") as layer:  # type: ignore[call-overload]
            for f in layer:
                digest = ""
                if f.isfile():
                    h = hashlib.sha256()
                    src = layer.extractfile(f)
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                    digest = h.hexdigest()
                kind = "file" if f.isfile() else "dir" if f.isdir() else "symlink" if f.issym() else "hardlink" if f.islnk() else "other"
                entries["/" + f.name.lstrip("./")] = LayerEntry(kind, digest, f.mode, f"{f.uid}:{f.gid}", int(f.mtime), f.linkname)
    except tarfile.ReadError:
        if entries or head.strip(b"\0"):
            return None  # not a tar: some other blob
        # an empty layer is a tar of zero blocks
    return reader.drain(), entries


def layer_files(engine: Engine, image: str, wanted: set[str]) -> dict[str, dict[str, LayerEntry]]:
    """{diff ID: {path: LayerEntry}} for the layers of IMAGE whose diff ID is in WANTED; raises if one is missing."""
    outer = tarfile.open(fileobj=StreamReader(engine.images.export(image)), mode="r|")  # type: ignore[call-overload]
    found: dict[str, dict[str, LayerEntry]] = {}
    for member in outer:
        if not member.isfile() or member.size < 20:  # smaller than any gzip stream or tar: a small JSON file at most
            continue
        layer = read_layer(outer.extractfile(member))
        if layer is not None and layer[0] in wanted:
            found[layer[0]] = layer[1]
    missing = sorted(wanted - set(found))
    if missing:
        raise EngineError(f"the engine's export of {image} holds no layer with diff ID {missing[0][:19]}"
                          f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: cannot compare it",
                          "this engine's export format is not one sglbuild reads; nothing was called identical")
    return found


def small_blobs(engine: Engine, image: str) -> dict[str, bytes]:
    """The export's small files (manifests, configs, indexes), layers streamed past unread."""
    blobs: dict[str, bytes] = {}
    outer = tarfile.open(fileobj=StreamReader(iter(engine.images.export(image))), mode="r|")  # type: ignore[call-overload]
    for member in outer:
        if member.isfile() and member.size < (1 << 20):
            blobs[member.name] = outer.extractfile(member).read()  # type: ignore[union-attr]
    return blobs


def oci_manifest(engine: Engine, image: str) -> dict[str, Any]:
    """IMAGE's OCI image manifest, from its export (an OCI layout: Docker 25 and later)."""
    blobs = small_blobs(engine, image)
    index = json.loads(blobs["index.json"])
    manifest = json.loads(blobs[f"blobs/sha256/{index['manifests'][0]['digest'].split(':', 1)[1]}"])
    if "layers" not in manifest:  # an index of platform manifests: take the first (the one this engine stores)
        manifest = json.loads(blobs[f"blobs/sha256/{manifest['manifests'][0]['digest'].split(':', 1)[1]}"])
    return manifest
