"""Step 8, tag: the image's own immutable tag, then — once the gate passed — the human tag.

``IMAGE:TAG-<image ID>`` is applied first and never moves (it names the image itself);
``IMAGE:TAG`` moves last, only to an image that passed :func:`builder.ship.gate.gate`. The SBOM
of a released image is written to ``out/TARGET.cdx.json``. What was built comes in as the build
returned it (its plan as built, its evidence stage's image, the image): nothing here plans or builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..state import atomic_write
from ..ui import Reporter
from .gate import Gated, gate

if TYPE_CHECKING:
    from ..assemble.stages import Built
    from ..engine import Engine


@dataclass
class Released:
    tag: str
    immutable_tag: str
    sbom: str
    gated: Gated

    @property
    def gate(self) -> str:
        """"passed", or "inherited from IMAGE_ID" (the same content passed the same gate here before)."""
        return f"inherited from {self.gated.reused_from}" if self.gated.reused_from else "passed"

    def to_dict(self) -> dict[str, Any]:
        """What ``build --json`` prints of it."""
        return {"tag": self.tag, "immutable_tag": self.immutable_tag, "sbom": self.sbom, "gate": self.gate,
                "smoke": [s.to_dict() for s in self.gated.smoke], "verify": self.gated.report.to_dict() if self.gated.report else {}}


def release(engine: Engine, built: Built, reporter: Reporter, out_dir: Path) -> Released:
    plan = built.plan
    if plan.repo or not plan.reproducible:
        raise ValueError("only a reproducible build of the shared stages is released under its human tag")
    immutable = plan.immutable_tag(built.image_id)
    engine.images.tag(built.image_id, immutable)
    # Always through the gate: it knows what passed here, and for which smoke tests (an image the human
    # tag already names passed someone's gate, maybe with other smoke commands).
    gated = gate(engine, built, reporter)
    tags = [plan.human_tag]
    if plan.target.declares_platforms and plan.platform == engine.platform:
        tags.append(plan.target.human_tag)  # IMAGE:TAG names the image of this engine's own platform
    for tag in tags:
        engine.images.tag(built.image_id, tag)
    suffix = f"-{plan.human_tag.rpartition('-')[2]}" if plan.target.declares_platforms else ""
    sbom = out_dir / f"{plan.target.name}{suffix}.cdx.json"
    sbom.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(sbom, plan.sbom)
    reporter.step("tag", "tagged", f"{'  '.join(tags)}  {immutable}")
    return Released(plan.human_tag, immutable, str(sbom), gated)
