"""``sglbuild build --check-reproducible``: two builds from scratch, compared layer by layer (a check of the build).

Neither build reuses a base, a stage or the engine's build cache; each gets its own
namespace (``sglbuild-repro/TARGET-a`` and ``-b``), removed afterwards. Identical means
the same image ID (and so the same config and the same layer diff IDs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .diff import LayerDiff, diff_images
from .evidence import complete
from ..state import engine_lock
from ..ui import Reporter
from ..assemble.plan import Plan
from ..assemble.stages import build_image

if TYPE_CHECKING:
    from ..engine import Engine

REPRO_REPO = "sglbuild-repro"


@dataclass
class ReproReport:
    """Two builds from scratch of one plan, compared layer by layer."""

    image_ids: tuple[str, str]
    seconds: tuple[float, float]
    layers: list[LayerDiff]

    @property
    def identical(self) -> bool:
        return self.image_ids[0] == self.image_ids[1]

    def to_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "image_ids": list(self.image_ids), "seconds": [round(s, 1) for s in self.seconds],
                "layers": [{**asdict(d), "identical": d.identical} for d in self.layers]}


def check_reproducible(engine: Engine, plans: tuple[Plan, Plan], wheelhouse: Path, reporter: Reporter) -> ReproReport:
    """PLANS: the target's plan twice, its stages tagged into two repositories of their own (REPRO_REPO/a and /b)."""
    with engine_lock(engine.where):  # gc must not take the first build's tags while the second one runs
        try:
            return _two_builds(engine, plans, wheelhouse, reporter)
        finally:
            remove_tags(engine, [p.repo for p in plans if p.repo])


def _two_builds(engine: Engine, plans: tuple[Plan, Plan], wheelhouse: Path, reporter: Reporter) -> ReproReport:
    runs = []
    for p in plans:
        reporter.info(f"from-scratch build into {p.repo}")
        built = build_image(engine, p, wheelhouse, reporter, fresh=True,
                            derive=lambda plan, image: complete(engine, plan, image, reporter, fresh=True))
        engine.images.tag(built.image_id, f"{built.plan.repo}:final")
        runs.append(built)
    a, b = runs
    return ReproReport((a.image_id, b.image_id), (a.seconds, b.seconds), diff_images(engine, a.image_id, b.image_id))


def remove_tags(engine: Engine, repos: list[str]) -> None:
    """Untag what the check made; children first (a stage image is its successor's parent)."""
    tags = engine.images.tags_under(tuple(r + ":" for r in repos))
    for _ in range(10):
        left = [t for t in tags if not engine.images.untag_or_remove(t)]
        if not left or len(left) == len(tags):
            return
        tags = left


def repro_text(report: ReproReport) -> str:
    a, b = report.image_ids
    lines = [f"build A: {a}  ({report.seconds[0]:.1f} s)", f"build B: {b}  ({report.seconds[1]:.1f} s)"]
    for layer in report.layers:
        lines.append(f"  layer {layer.index} ({layer.stage}): {'identical' if layer.identical else 'DIFFERS'} {(layer.a or '')[:19]}")
        lines += [f"      {f['path']}: {', '.join(f['how'])}" for f in layer.files[:50]]
    lines.append("REPRODUCIBLE: both builds gave the same image ID" if report.identical
                 else "NOT REPRODUCIBLE: the files above differ between two builds of the same lock")
    return "\n".join(lines) + "\n"
