"""``sglbuild archs``: the GPU code in files, wheels, trees and images.

Files, wheels and trees are read here with the fatbin reader; an image is read by running
the same reader inside it with the image's own Python (the probe: no network, sglbuild
mounted read-only), so nothing is exported or unpacked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..contracts import GpuCode
from ..probe.fatbin import scan_path, verdict

IMAGE_SCHEME = "docker://"


def scan(paths: list[str], connect: Callable) -> list[GpuCode]:
    """The GPU code of each PATH (a docker://IMAGE is read inside the image, over the engine CONNECT gives)."""
    codes: list[GpuCode] = []
    for p in paths:
        if p.startswith(IMAGE_SCHEME):
            answer = connect().containers.probe(p[len(IMAGE_SCHEME):], ["archs", "/"])
            codes += [GpuCode.from_dict(d) for d in answer]
        else:
            codes += list(scan_path(Path(p)))
    return codes


def table(codes: list[GpuCode], target_arch: str | None) -> list[dict]:
    return [{**c.__dict__, **({"verdict": verdict(c, target_arch)} if target_arch else {})} for c in codes]


def table_text(rows: list[dict], target_arch: str | None) -> str:
    width = max([len(r["path"]) for r in rows] + [4])
    lines = [f"{'file':<{width}}  {'SASS':<40}  {'PTX':<16}" + (f"  on {target_arch}" if target_arch else "")]
    for row in rows:
        lto = f"  LTO IR {' '.join(row['lto'])} (link-time input)" if row.get("lto") else ""
        if row.get("error"):
            lines.append(f"{row['path']:<{width}}  unreadable: {row['error']}")
        elif row["sass"] or row["ptx"]:
            line = f"{row['path']:<{width}}  {' '.join(row['sass']) or '-':<40}  {' '.join(row['ptx']) or '-':<16}"
            lines.append(line + (f"  {row['verdict']}" if target_arch else "") + lto)
        else:
            lines.append(f"{row['path']:<{width}}  no GPU code{lto}")
    return "\n".join(lines) + "\n"
