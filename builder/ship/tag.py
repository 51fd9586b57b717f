"""Step 8, tag: the image's own immutable tag, then — once the gate passed — the human tag.

``IMAGE:TAG-<image ID>`` is applied first and never moves (it names the image itself);
``IMAGE:TAG`` moves last, only to an image that passed :func:`builder.gate.gate`. The SBOM
of a released image is written to ``out/TARGET.cdx.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..build.plan import Plan
from ..build.stages import Built
from ..state import atomic_write
from ..ui import Reporter
from .gate import gate

if TYPE_CHECKING:
    from ..engine import Engine


@dataclass
class Released:
    tag: str
    immutable_tag: str
    sbom: str
    gate: str  # "passed" | "inherited from IMAGE_ID" (the same content passed the same gate here before)
    smoke: list[dict[str, Any]] = field(default_factory=list)
    verify: dict[str, Any] = field(default_factory=dict)


def release(engine: Engine, plan: Plan, built: Built, reporter: Reporter, out_dir: Path) -> Released:
    if plan.repo or not plan.reproducible:
        raise ValueError("only a reproducible build of the shared stages is released under its human tag")
    immutable = plan.immutable_tag(built.image_id)
    engine.images.tag(built.image_id, immutable)
    # Always through the gate: it knows what passed here, and for which smoke tests (an image the human
    # tag already names passed someone's gate, maybe with other smoke commands).
    evidence = next((s.image_id for s in built.stages if s.name == plan.evidence_stage.name), None)
    gated = gate(engine, plan, built.image_id, built.content_id, reporter, evidence_image=evidence)
    how = f"inherited from {gated.reused_from}" if gated.reused_from else "passed"
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
    return Released(plan.human_tag, immutable, str(sbom), how, gated.smoke, gated.verify)
