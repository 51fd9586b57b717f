"""``sglbuild diff``: two images compared layer by layer and file by file (and ``build --check-reproducible``'s verdict).

Each layer is read from the engine's export by :mod:`builder.engine.export` (streamed, never
written to disk, found by its diff ID whatever the export's layout). Strict comparison names
every differing file of each differing layer; ``--semantic`` compares what a container sees:
contents, permissions, owners and presence, with entries that change nothing left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..contracts import HISTORY_PREFIX, LABEL_LAYER_STAGES
from ..engine.export import layer_files
from ..engine.records import LayerEntry

if TYPE_CHECKING:
    from ..engine import Engine


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


def effective(layers: list[dict[str, LayerEntry]]) -> list[dict[str, LayerEntry]]:
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


def compare_entries(a: dict[str, LayerEntry], b: dict[str, LayerEntry], semantic: bool) -> list[dict]:
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
    labelled = json.loads(engine.images.get(image_id).labels.get(LABEL_LAYER_STAGES) or "[]")
    if len(labelled) == count:
        return labelled
    created = [h.get("CreatedBy", "") for h in reversed(engine.images.history(image_id))]
    named = [c.split(HISTORY_PREFIX, 1)[1] for c in created if c.startswith(HISTORY_PREFIX)]
    return [named[i] if len(named) == count else f"layer {i}" for i in range(count)]


def diff_images(engine: Engine, image_a: str, image_b: str, semantic: bool = False) -> list[LayerDiff]:
    """Layer by layer. Strict: the differing layers' files. Semantic: contents, permissions, owners and
    presence only, of what each layer changes (no-op entries left out: every layer is read for that)."""
    images = [engine.images.get(ref) for ref in (image_a, image_b)]
    la, lb = (list(img.layers) for img in images)
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
