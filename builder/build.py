"""Step 5, build: the plan's base and stages, then the final image normalized.

A stage whose tag the engine already has is not built again (its key names every input);
a missing one is built ``FROM`` its parent's tag, with the verified wheelhouse served on
an internal network. Only a finished image gets a stage's tag. Nothing here moves a human
tag: that is :mod:`builder.tag`'s, after :mod:`builder.gate` passed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .base import ensure_base
from .contracts import LABEL_MANAGED, LABEL_STAGE_KEY
from .errors import DiskFull
from .evidence import complete
from .normalize import normalize
from .plan import Plan, PlannedStage
from .ui import Reporter
from .wheelhouse import verify_wheelhouse
from .wheelserver import WheelServer

if TYPE_CHECKING:
    from .engine import Engine


@dataclass
class StageResult:
    name: str
    tag: str
    image_id: str
    status: str  # "reused" | "built"
    seconds: float


@dataclass
class Built:
    """An image built from a plan, tagged by nothing but its stages."""

    target: str
    lock_digest: str
    base: str
    base_built: bool
    base_seconds: float
    stages: list[StageResult] = field(default_factory=list)
    image_id: str = ""
    content_id: str = ""  # equal for images that differ only in provenance labels (see normalize)
    layers: list[str] = field(default_factory=list)  # diff IDs, base first
    size: int = 0
    normalize_seconds: float = 0.0
    seconds: float = 0.0


def build_image(engine: Engine, plan: Plan, wheelhouse: Path, reporter: Reporter, *, fresh: bool = False,
                verbose: bool = False) -> tuple[Plan, Built]:
    """base -> stages (-> evidence -> final) -> normalize. ``fresh``: ignore every existing base, stage and engine cache.

    Returns the plan as built (a derived target's, completed with the flags its evidence gave) and the image.
    """
    started = time.monotonic()
    verify_wheelhouse(plan.lock, wheelhouse)
    t0 = time.monotonic()
    base_built = ensure_base(engine, plan.target, plan.lock, plan.base, fresh=fresh)
    built = Built(plan.target.name, f"sha256:{plan.lock.digest}", plan.base, base_built, time.monotonic() - t0)
    reporter.step("base", "built" if base_built else "reused", f"{built.base_seconds:5.1f} s  {plan.base}")

    built.stages = build_stages(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose)
    if plan.awaiting_evidence:
        plan = complete(engine, plan, built.stages[-1].image_id, reporter, fresh=fresh)
        built.stages += build_stages(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose, only=[plan.final])

    t0 = time.monotonic()
    last = built.stages[-1].image_id
    if plan.reproducible:
        normalized = normalize(engine, last, _layer_stages(engine, built), plan.labels, plan.target.base.source_date_epoch)
        built.image_id, built.content_id = normalized.image_id, normalized.content_id
    else:
        built.image_id = built.content_id = last
    image = engine.images.get(built.image_id)
    built.size, built.layers = int(image.attrs.get("Size", 0)), list(image.attrs["RootFS"]["Layers"])
    built.normalize_seconds = time.monotonic() - t0
    reporter.step("normalize", "done" if plan.reproducible else "skipped",
                  f"{built.normalize_seconds:5.1f} s  {built.image_id[:19]} ({len(built.layers)} layers)")
    built.seconds = time.monotonic() - started
    return plan, built


def build_stages(engine: Engine, plan: Plan, wheelhouse: Path, reporter: Reporter, *, fresh: bool = False,
                 verbose: bool = False, only: list[PlannedStage] | None = None) -> list[StageResult]:
    """The plan's stages (or ONLY these), each reused by its tag or built FROM its parent's."""
    stages = only or list(plan.stages)
    todo = list(stages) if fresh else [s for s in stages if engine.images.find(s.tag) is None]
    results = []
    if not todo:
        return [_reused(engine, s, reporter) for s in stages]
    _check_disk(engine, plan, wheelhouse, todo)
    network, gateway = engine.networks.build_network()
    with WheelServer(wheelhouse, plan.lock.wheels, gateway, {f.url_path: f.data for f in plan.served}) as server:
        for stage in stages:
            if stage not in todo:
                results.append(_reused(engine, stage, reporter))
                continue
            t0 = time.monotonic()
            reporter.step(stage.name, "building", stage.tag)
            image_id = engine.builds.classic(
                stage.dockerfile, stage.name, network=network, nocache=fresh,
                buildargs={"SGLBUILD_WHEELHOUSE": server.url, "PIP_TRUSTED_HOST": gateway},
                labels={LABEL_MANAGED: "true", LABEL_STAGE_KEY: stage.key},
                on_line=reporter.build_line if verbose else None,
                on_failure=None if verbose else reporter.build_lines,  # the failed step's last lines, above the error
            )
            engine.images.tag(image_id, stage.tag, drop_replaced=True)  # only a finished image gets the stage's tag
            seconds = time.monotonic() - t0
            reporter.step(stage.name, "built", f"{seconds:5.1f} s  {stage.tag}")
            results.append(StageResult(stage.name, stage.tag, image_id, "built", seconds))
    return results


def _reused(engine: Engine, stage: PlannedStage, reporter: Reporter) -> StageResult:
    reporter.step(stage.name, "reused", f"  0.0 s  {stage.tag}")
    return StageResult(stage.name, stage.tag, engine.images.get(stage.tag).id, "reused", 0.0)


def _layer_stages(engine: Engine, built: Built) -> list[str]:
    """Which stage made each layer of the final image (from each stage image's layer count)."""
    names: list[str] = []
    for name, ref in [("base", built.base), *((s.name, s.image_id) for s in built.stages)]:
        count = len(engine.images.get(ref).attrs["RootFS"]["Layers"])
        names += [name] * (count - len(names))
    return names


def _check_disk(engine: Engine, plan: Plan, wheelhouse: Path, todo: list[PlannedStage]) -> None:
    """Refuse to start a build that cannot fit: installed wheels take about 2.5x their size."""
    stages = {s.name for s in todo}
    need = sum((wheelhouse / w.filename).stat().st_size for w in plan.lock.wheels if w.stage in stages)
    need = int(need * 2.5) + (512 << 20)
    try:
        free = shutil.disk_usage(engine.root_dir).free
    except OSError:
        return  # a remote engine: its disk is not ours to measure
    if free < need:
        raise DiskFull(f"{free / 2**30:.1f} GiB free under {engine.root_dir}, the build needs about {need / 2**30:.1f} GiB",
                       "free space (sglbuild gc removes what sglbuild left) and build again")
