"""``sglbuild build --check-reproducible``: two builds from scratch, compared layer by layer.

Neither build reuses a base, a stage or the engine's build cache; each gets its own
namespace (``sglbuild-repro/TARGET-a`` and ``-b``), removed afterwards. Identical means
the same image ID (and so the same config and the same layer diff IDs).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..check.diff import diff_images
from ..ui import Reporter
from .gc import build_lock
from .plan import Plan
from .stages import build_image

if TYPE_CHECKING:
    from ..engine import Engine

REPRO_REPO = "sglbuild-repro"


def check_reproducible(engine: Engine, make_plan: Callable[[str], Plan], wheelhouse: Path, reporter: Reporter) -> dict:
    """MAKE_PLAN(repo) gives the target's plan with its stages tagged into REPO."""
    plans = [make_plan(f"{REPRO_REPO}/{name}") for name in ("a", "b")]
    repos = [p.repo for p in plans]
    with build_lock(engine):  # gc must not take the first build's tags while the second one runs
        try:
            return _two_builds(engine, plans, wheelhouse, reporter)
        finally:
            remove_tags(engine, [r for r in repos if r])


def _two_builds(engine: Engine, plans: list[Plan], wheelhouse: Path, reporter: Reporter) -> dict:
    runs = []
    for p in plans:
        reporter.info(f"from-scratch build into {p.repo}")
        _, built = build_image(engine, p, wheelhouse, reporter, fresh=True)
        engine.images.tag(built.image_id, f"{p.repo}:final")
        runs.append(built)
    a, b = runs
    diffs = diff_images(engine, a.image_id, b.image_id)
    return {
        "identical": a.image_id == b.image_id,
        "image_ids": [a.image_id, b.image_id],
        "seconds": [round(a.seconds, 1), round(b.seconds, 1)],
        "layers": [{**asdict(d), "identical": d.identical} for d in diffs],
    }


def remove_tags(engine: Engine, repos: list[str]) -> None:
    """Untag what the check made; children first (a stage image is its successor's parent)."""
    tags = engine.images.tags_under(tuple(r + ":" for r in repos))
    for _ in range(10):
        left = [t for t in tags if not engine.images.untag_or_remove(t)]
        if not left or len(left) == len(tags):
            return
        tags = left


def repro_text(report: dict) -> str:
    a, b = report["image_ids"]
    lines = [f"build A: {a}  ({report['seconds'][0]} s)", f"build B: {b}  ({report['seconds'][1]} s)"]
    for layer in report["layers"]:
        state = "identical" if layer["identical"] else "DIFFERS"
        lines.append(f"  layer {layer['index']} ({layer['stage']}): {state} {(layer['a'] or '')[:19]}")
        for f in layer["files"][:50]:
            lines.append(f"      {f['path']}: {', '.join(f['how'])}")
    lines.append("REPRODUCIBLE: both builds gave the same image ID" if report["identical"]
                 else "NOT REPRODUCIBLE: the files above differ between two builds of the same lock")
    return "\n".join(lines) + "\n"
