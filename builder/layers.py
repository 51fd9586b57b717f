"""Images compared layer by layer and file by file (``sglbuild diff``, ``build --check-reproducible``).

Layers are read from the engine's image export as a stream, never written to disk:
each layer's files are listed with their content hash, mode, owner and mtime, and
the layer's own sha256 (its diff ID) is computed on the way.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import docker

from .engine import find_image
from .errors import InputError

_CHUNK = 1 << 20


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
    """Reads a stream through, hashing every byte (the layer tar's sha256 is its diff ID)."""

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


class _StreamReader:
    """A file object over the engine's chunked export stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buf = chunks, b""

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


def layer_files(client: docker.DockerClient, image: str, wanted: set[str]) -> dict[str, dict[str, Entry]]:
    """{diff ID: {path: Entry}} for the layers of IMAGE whose diff ID is in WANTED.

    The export names layers by their legacy IDs, in no useful order, so every layer is
    read and hashed on the way; only the wanted ones are kept.
    """
    outer = tarfile.open(fileobj=_StreamReader(client.api.get_image(image, chunk_size=_CHUNK)), mode="r|")
    found: dict[str, dict[str, Entry]] = {}
    for member in outer:
        if not member.name.endswith("layer.tar") or not member.isfile():
            continue
        reader = _HashingReader(outer.extractfile(member))
        entries: dict[str, Entry] = {}
        with tarfile.open(fileobj=reader, mode="r|") as layer:
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
        diff_id = reader.drain()
        if diff_id in wanted:
            found[diff_id] = entries
    return found


def compare_entries(a: dict[str, Entry], b: dict[str, Entry], semantic: bool) -> list[dict]:
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
        if x.mode != y.mode:
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


def layer_stages(client: docker.DockerClient, image_id: str, count: int) -> list[str]:
    """Stage names of a normalized image's layers (history 'sglbuild: STAGE'), else 'layer N'."""
    created = [h.get("CreatedBy", "") for h in reversed(client.api.history(image_id))]
    named = [c.split("sglbuild: ", 1)[1] for c in created if c.startswith("sglbuild: ")]
    return [named[i] if len(named) == count else f"layer {i}" for i in range(count)]


def diff_images(client: docker.DockerClient, image_a: str, image_b: str, semantic: bool = False) -> list[LayerDiff]:
    images = []
    for ref in (image_a, image_b):
        img = find_image(client, ref)
        if img is None:
            raise InputError(f"no image {ref!r} on this engine", "build it, or pull it by digest")
        images.append(img)
    la, lb = (img.attrs["RootFS"]["Layers"] for img in images)
    n = max(len(la), len(lb))
    names = layer_stages(client, images[0].id, len(la)) + [f"layer {i}" for i in range(len(la), n)]
    diffs = [LayerDiff(i, names[i], la[i] if i < len(la) else None, lb[i] if i < len(lb) else None) for i in range(n)]
    changed = [d for d in diffs if not d.identical]
    if changed:
        files_a = layer_files(client, images[0].id, {d.a for d in changed if d.a})
        files_b = layer_files(client, images[1].id, {d.b for d in changed if d.b})
        for d in changed:
            d.files = compare_entries(files_a.get(d.a, {}), files_b.get(d.b, {}), semantic)
    return diffs


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
