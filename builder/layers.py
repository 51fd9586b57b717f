"""Images compared layer by layer and file by file (``sglbuild diff``, ``build --check-reproducible``).

Layers are read from the engine's image export as a stream, never written to disk. The
export's layout differs between engines and image stores (``ID/layer.tar`` with a
``manifest.json`` on Docker 20.10; an OCI layout of ``blobs/sha256/...``, gzip-compressed
on the containerd image store, on Docker 25 and later), so no file name is trusted: every
member that is a layer tar, compressed or not, is read, and it is known by the sha256 of
its uncompressed bytes, which is its diff ID. A layer that cannot be found in the export
is an error, never an empty layer: a comparison that read nothing must not say "identical".
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Iterator

from .contracts import HISTORY_PREFIX, LABEL_LAYER_STAGES
from .errors import EngineError

if TYPE_CHECKING:
    from .engine import Engine

_CHUNK = 1 << 20
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Entry:
    kind: str  # file | dir | symlink | hardlink | other
    sha256: str
    mode: int
    owner: str
    mtime: int
    link: str


@dataclass
class LayerDiff:
    index: int
    stage: str
    a: str | None
    b: str | None
    files: list[dict] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.a == self.b


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


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _read_layer(member_stream: BinaryIO) -> tuple[str, dict[str, Entry]] | None:
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
    entries: dict[str, Entry] = {}
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
                entries["/" + f.name.lstrip("./")] = Entry(kind, digest, f.mode, f"{f.uid}:{f.gid}", int(f.mtime), f.linkname)
    except tarfile.ReadError:
        if entries or head.strip(b"\0"):
            return None  # not a tar: some other blob
        # an empty layer is a tar of zero blocks
    return reader.drain(), entries


def layer_files(engine: Engine, image: str, wanted: set[str]) -> dict[str, dict[str, Entry]]:
    """{diff ID: {path: Entry}} for the layers of IMAGE whose diff ID is in WANTED; raises if one is missing."""
    outer = tarfile.open(fileobj=StreamReader(engine.images.export(image)), mode="r|")  # type: ignore[call-overload]
    found: dict[str, dict[str, Entry]] = {}
    for member in outer:
        if not member.isfile() or member.size < 20:  # smaller than any gzip stream or tar: a small JSON file at most
            continue
        layer = _read_layer(outer.extractfile(member))
        if layer is not None and layer[0] in wanted:
            found[layer[0]] = layer[1]
    missing = sorted(wanted - set(found))
    if missing:
        raise EngineError(f"the engine's export of {image} holds no layer with diff ID {missing[0][:19]}"
                          f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: cannot compare it",
                          "this engine's export format is not one sglbuild reads; nothing was called identical")
    return found


def effective(layers: list[dict[str, Entry]]) -> list[dict[str, Entry]]:
    """Each layer's entries less those that change nothing: an entry whose kind, content, permissions and
    owner equal what the layers below already give that path.

    Builders write such no-op entries differently by construction: the classic builder's overlayfs
    copy-up puts a directory in a layer whenever a step touched it, even when the step left its
    metadata as it was (sglbuild sets every touched time back); BuildKit's differ leaves it out.
    """
    state: dict[str, tuple] = {}
    out = []
    for layer in layers:
        kept = {}
        for path, e in layer.items():
            parent, _, name = path.rpartition("/")
            if name.startswith(".wh."):  # a whiteout: the path (or, opaque, the directory's contents) is gone
                kept[path] = e
                gone = f"{parent}/" if name == ".wh..wh..opq" else f"{parent}/{name[4:]}"
                state = {p: v for p, v in state.items() if not (p == gone or p.startswith(gone.rstrip("/") + "/"))}
                continue
            key = (e.kind, e.sha256, e.mode & 0o7777, e.owner, e.link)
            if state.get(path) != key:
                kept[path] = e
            state[path] = key
        out.append(kept)
    return out


def compare_entries(a: dict[str, Entry], b: dict[str, Entry], semantic: bool) -> list[dict]:
    """How the files of two layers differ. Permissions are compared without the file-type bits some tar
    writers put in the mode field (the type is compared on its own)."""
    out = []
    for path in sorted(set(a) | set(b)):
        x, y = a.get(path), b.get(path)
        if x is None or y is None:
            out.append({"path": path, "how": ["presence"], "a": "absent" if x is None else x.kind, "b": "absent" if y is None else y.kind})
            continue
        how = []
        if x.kind != y.kind:
            how.append("type")
        if x.sha256 != y.sha256 or x.link != y.link:
            how.append("content")
        if x.mode & 0o7777 != y.mode & 0o7777:
            how.append("mode")
        if x.owner != y.owner:
            how.append("owner")
        if x.mtime != y.mtime and not semantic:
            how.append("mtime")
        if how:
            out.append({"path": path, "how": how,
                        "a": {"sha256": x.sha256[:12], "mode": oct(x.mode), "owner": x.owner, "mtime": x.mtime},
                        "b": {"sha256": y.sha256[:12], "mode": oct(y.mode), "owner": y.owner, "mtime": y.mtime}})
    return out


def layer_stages(engine: Engine, image_id: str, count: int) -> list[str]:
    """Stage names of a normalized image's layers (its label, or history 'sglbuild: STAGE'), else 'layer N'."""
    labelled = json.loads((engine.images.get(image_id).labels or {}).get(LABEL_LAYER_STAGES) or "[]")
    if len(labelled) == count:
        return labelled
    created = [h.get("CreatedBy", "") for h in reversed(engine.images.history(image_id))]
    named = [c.split(HISTORY_PREFIX, 1)[1] for c in created if c.startswith(HISTORY_PREFIX)]
    return [named[i] if len(named) == count else f"layer {i}" for i in range(count)]


def diff_images(engine: Engine, image_a: str, image_b: str, semantic: bool = False) -> list[LayerDiff]:
    """Layer by layer. Strict: the differing layers' files. Semantic: contents, permissions, owners and
    presence only, of what each layer changes (no-op entries left out: every layer is read for that)."""
    images = [engine.images.get(ref) for ref in (image_a, image_b)]
    la, lb = (img.attrs["RootFS"]["Layers"] for img in images)
    n = max(len(la), len(lb))
    names = layer_stages(engine, images[0].id, len(la)) + [f"layer {i}" for i in range(len(la), n)]
    diffs = [LayerDiff(i, names[i], la[i] if i < len(la) else None, lb[i] if i < len(lb) else None) for i in range(n)]
    changed = [d for d in diffs if not d.identical]
    if not changed:
        return diffs
    if semantic:
        files_a, files_b = layer_files(engine, images[0].id, set(la)), layer_files(engine, images[1].id, set(lb))
        ea, eb = effective([files_a[d] for d in la]), effective([files_b[d] for d in lb])
        for d in changed:
            d.files = compare_entries(ea[d.index] if d.a else {}, eb[d.index] if d.b else {}, semantic)
        return diffs
    files_a = layer_files(engine, images[0].id, {d.a for d in changed if d.a})
    files_b = layer_files(engine, images[1].id, {d.b for d in changed if d.b})
    for d in changed:
        d.files = compare_entries(files_a.get(d.a, {}), files_b.get(d.b, {}), semantic)
    return diffs


def differs(diffs: list[LayerDiff], semantic: bool) -> bool:
    """Whether a comparison found a difference that counts (timestamps do not, with --semantic)."""
    return any(d.files or (not d.identical and not semantic) for d in diffs)


def diff_text(diffs: list[LayerDiff], semantic: bool) -> str:
    lines = []
    for d in diffs:
        if d.identical:
            lines.append(f"layer {d.index} ({d.stage}): identical {d.a[:19] if d.a else ''}")
            continue
        same = semantic and not d.files
        lines.append(f"layer {d.index} ({d.stage}): {'same files, other timestamps' if same else 'differs'}: "
                     f"{(d.a or 'absent')[:19]} vs {(d.b or 'absent')[:19]}")
        for f in d.files[:50]:
            lines.append(f"    {f['path']}: {', '.join(f['how'])}")
        if len(d.files) > 50:
            lines.append(f"    ... and {len(d.files) - 50} more files")
    return "\n".join(lines) + "\n"
