"""Step 5, build: the plan's base and stages, then the final image normalized (``sglbuild build``).

A stage whose tag the engine already has is not built again (its key names every input);
a missing one is built ``FROM`` its parent's tag, with the verified wheelhouse served on
an internal network. Only a finished image gets a stage's tag. Nothing here moves a human
tag: that is :mod:`builder.ship.tag`'s, after :mod:`builder.ship.gate` passed.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..contracts import AOT_CROSS_OUT, BUILDKIT_WHEELHOUSE_PORT, LABEL_MANAGED, LABEL_STAGE_KEY, TOOLS
from ..engine.archives import tar_archive
from ..engine.images import tar_member_bytes
from ..errors import DiskFull, InputError
from ..inputs.profile import Target
from ..inputs.wheelhouse import verify_wheelhouse
from ..state import engine_lock, record_stage, scratch, stage_image
from ..ui import Reporter
from .base import ensure_base
from .cache import StageCache
from .emulation import check_can_run
from .helpers_wheel import HELPERS_DIR
from .normalize import normalize
from .plan import Plan, PlannedStage, ServedFile
from .wheelserver import WheelServer

if TYPE_CHECKING:
    from ..engine import Engine


@dataclass
class StageResult:
    name: str
    tag: str
    image_id: str
    status: str  # "reused" | "built" | "pulled" (from the registry cache)
    seconds: float


@dataclass
class Built:
    """An image built from a plan, tagged by nothing but its stages: what the gate and the tags take."""

    plan: Plan  # the plan as built: a derived target's completed with the flags its evidence gave
    base: str
    base_built: bool
    base_seconds: float
    stages: list[StageResult] = field(default_factory=list)
    image_id: str = ""
    content_id: str = ""  # equal for images that differ only in provenance labels (see normalize)
    layers: list[str] = field(default_factory=list)  # diff IDs, base first
    size: int = 0
    evidence_image: str | None = None  # a derived target's evidence stage's image, its final stage's parent
    evidence_seconds: float = 0.0  # a derived target's evidence step: under emulation, most of a build
    normalize_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def target(self) -> str:
        return self.plan.target.name

    @property
    def lock_digest(self) -> str:
        return f"sha256:{self.plan.lock.digest}"

    def to_dict(self) -> dict[str, Any]:
        """What ``build --json`` prints of it."""
        return {"target": self.target, "lock_digest": self.lock_digest, "platform": self.plan.platform, "base": self.base,
                "base_built": self.base_built, "base_seconds": self.base_seconds, "stages": [asdict(s) for s in self.stages],
                "image_id": self.image_id, "content_id": self.content_id, "layers": self.layers, "size": self.size,
                "evidence_image": self.evidence_image, "evidence_seconds": self.evidence_seconds,
                "normalize_seconds": self.normalize_seconds, "seconds": self.seconds}


# A derived target's evidence step: (the plan awaiting evidence, its evidence stage's image) -> the plan completed.
Derive = Callable[[Plan, str], Plan]


def build_order(engine: Engine, target: Target, asked: tuple[str, ...] = ()) -> list[str]:
    """The platforms to build: those ASKED (every one of the target's by default), the engine's own first."""
    unknown = [p for p in asked if p not in target.platform_names]
    if unknown:
        raise InputError(f"target {target.name!r} has no platform {unknown[0]}", f"its platforms: {', '.join(target.platform_names)}")
    chosen = sorted((p for p in target.platform_names if not asked or p in asked), key=lambda p: p != engine.platform)
    for platform in chosen:  # before anything is built: an arm64 image needs emulation here, or one line says so
        check_can_run(platform, engine.platform)
    return chosen


def build_image(engine: Engine, plan: Plan, wheelhouse: Path, reporter: Reporter, *, fresh: bool = False,
                verbose: bool = False, cache: StageCache | None = None, derive: Derive | None = None) -> Built:
    """base -> stages (-> evidence -> final) -> normalize. ``fresh``: ignore every existing base, stage and engine cache.
    ``cache``: a registry to pull missing stages from, and to push the ones built here to. ``derive``: a derived
    target's evidence step (the check room's), which completes the plan from the evidence stage's image.

    Returns what was built, with the plan as built. The platform's emulation is the caller's to check (build_order).
    """
    with engine_lock(engine.where):  # 'sglbuild gc' waits for running builds: it never removes their work
        return _build_image(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose, cache=cache, derive=derive)


def _build_image(engine: Engine, plan: Plan, wheelhouse: Path, reporter: Reporter, *, fresh: bool,
                 verbose: bool, cache: StageCache | None, derive: Derive | None) -> Built:
    started = time.monotonic()
    if plan.awaiting_evidence and derive is None:
        raise ValueError(f"{plan.target.name}'s flags are derived from its evidence: give build_image an evidence step")
    wheels_checked = verify_wheelhouse(plan.lock, wheelhouse, missing_ok=cache is not None)  # a changed wheel stops any build at once
    t0 = time.monotonic()
    base_built = ensure_base(engine, plan.target, plan.lock, plan.base, fresh=fresh, cache=cache)
    built = Built(plan, plan.base, base_built, time.monotonic() - t0)
    reporter.step("base", "built" if base_built else "reused", f"{built.base_seconds:5.1f} s  {plan.base}")

    if plan.cross is None:
        built.stages = build_stages(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose, cache=cache,
                                    wheels_checked=wheels_checked)
    else:  # the modules are wanted only at the flashinfer-aot stage: by then another job may have cached them
        at = next(i for i, s in enumerate(plan.stages) if s.spec.cross_file)
        built.stages = build_stages(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose, cache=cache,
                                    only=list(plan.stages[:at]), wheels_checked=wheels_checked)
        plan = built.plan = cross_compiled(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose, cache=cache)
        built.stages += build_stages(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose, cache=cache,
                                     only=list(plan.stages[at:]), wheels_checked=wheels_checked)
    if plan.awaiting_evidence:
        t0 = time.monotonic()
        built.evidence_image = built.stages[-1].image_id
        plan = built.plan = derive(plan, built.evidence_image)  # type: ignore[misc]
        built.evidence_seconds = time.monotonic() - t0
        built.stages += build_stages(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose, only=[plan.final], cache=cache,
                                     wheels_checked=wheels_checked)

    t0 = time.monotonic()
    last = built.stages[-1].image_id
    if plan.reproducible:
        normalized = normalize(engine, plan, last, _layer_stages(engine, built))
        built.image_id, built.content_id = normalized.image_id, normalized.content_id
    else:
        built.image_id = built.content_id = last
    image = engine.images.get(built.image_id)
    built.size, built.layers = image.size, list(image.layers)
    built.normalize_seconds = time.monotonic() - t0
    reporter.step("normalize", "done" if plan.reproducible else "skipped",
                  f"{built.normalize_seconds:5.1f} s  {built.image_id[:19]} ({len(built.layers)} layers)")
    built.seconds = time.monotonic() - started
    return built


def cross_compiled(engine: Engine, plan: Plan, wheelhouse: Path, reporter: Reporter, *, fresh: bool = False,
                   verbose: bool = False, cache: StageCache | None = None) -> Plan:
    """PLAN with its cross-compiled FlashInfer modules served to its flashinfer-aot stage: the build platform's stages up to
    the STAGE_AOT_CROSS stage built (or reused) natively, its modules read from that image into one tar, by name, each
    dated SOURCE_DATE_EPOCH. Nothing to do when the flashinfer-aot stage is here already."""
    aot = next(s for s in plan.stages if s.spec.cross_file)
    if not fresh and _trusted(engine, aot, Reporter(quiet=True)) is not None:  # build_stages reuses it: nothing to serve
        return plan
    host = plan.cross
    assert host is not None
    cross = host.stages[-1]
    reporter.info(f"FlashInfer's modules for {plan.platform}: compiled on {host.platform} ({cross.tag})")
    image = _trusted(engine, cross, reporter) if not fresh else None
    if image is None and cache is not None and not fresh:  # pushed by the build platform's job: its stages are not needed
        image = cache.fetch(cross.name, cross.key, cross.tag)
        if image is not None:
            record_stage(cross.key, image, engine.images.get(image).content_key)
    if image is None:
        check_can_run(host.platform, engine.platform)  # a build platform that is not this engine's runs emulated, or says so
        ensure_base(engine, host.target, host.lock, host.base, fresh=fresh, cache=cache)
        image = build_stages(engine, host, wheelhouse, reporter, fresh=fresh, verbose=verbose, cache=cache)[-1].image_id
    return serving_modules(engine, plan, image)


def serving_modules(engine: Engine, plan: Plan, image: str) -> Plan:
    """PLAN with the modules of IMAGE (its STAGE_AOT_CROSS stage's) among the files its build serves."""
    aot = next(s for s in plan.stages if s.spec.cross_file)
    files = tar_member_bytes(engine.images.archive(image, AOT_CROSS_OUT) or b"", below=True)
    if not files:
        raise InputError(f"stage {plan.cross.stages[-1].name if plan.cross else image} left no module in {AOT_CROSS_OUT}",
                         "build it again with --no-cache")
    data = tar_archive(dict(sorted(files.items())), plan.target.base.source_date_epoch)
    return replace(plan, served=(*plan.served, ServedFile(aot.spec.cross_file, data)))


def _stage_args(plan: Plan, stage: PlannedStage) -> dict[str, str]:
    """Build arguments one stage's text reads beyond the wheelhouse's address: a cross-compiled flashinfer-aot stage
    checks the served modules against the sha256 the build read from their image."""
    if not stage.spec.cross_file:
        return {}
    served = next(f for f in plan.served if f.url_path == stage.spec.cross_file)
    return {"SGLBUILD_AOT_SHA256": served.sha256}


def build_stages(engine: Engine, plan: Plan, wheelhouse: Path, reporter: Reporter, *, fresh: bool = False,
                 verbose: bool = False, only: list[PlannedStage] | None = None, cache: StageCache | None = None,
                 wheels_checked: bool = False) -> list[StageResult]:
    """The plan's stages (or ONLY these), each reused by its tag, pulled from the CACHE, or built FROM its parent's.
    ``wheels_checked``: the wheelhouse was verified whole for this build already."""
    stages = only or list(plan.stages)
    trusted = {} if fresh else {s.name: image for s in stages if (image := _trusted(engine, s, reporter)) is not None}
    todo = [s for s in stages if s.name not in trusted]
    pulled: dict[str, str] = {}
    if cache is not None and not fresh:
        for stage in list(todo):  # in order: a stage pulled needs no parent here, one built needs its parent's image
            image_id = cache.fetch(stage.name, stage.key, stage.tag)
            if image_id is None:
                break
            record_stage(stage.key, image_id, engine.images.get(image_id).content_key)
            pulled[stage.name] = image_id
            todo.remove(stage)
    if not todo:
        results = [StageResult(s.name, s.tag, pulled[s.name], "pulled", 0.0) if s.name in pulled else _reused(s, trusted[s.name], reporter)
                   for s in stages]
        _offer(cache, stages, results)
        return results
    if not wheels_checked:  # only now: a build served whole by the cache needs no wheels
        verify_wheelhouse(plan.lock, wheelhouse)
    _check_disk(engine, plan, wheelhouse, todo)
    build = _buildkit_builder if plan.builder == "buildkit" else _classic_builder
    results = []
    with build(engine, plan, wheelhouse, fresh, verbose, reporter) as build_one:
        for stage in stages:
            if stage.name in pulled:
                results.append(StageResult(stage.name, stage.tag, pulled[stage.name], "pulled", 0.0))
                continue
            if stage not in todo:
                results.append(_reused(stage, trusted[stage.name], reporter))
                _offer(cache, [stage], results[-1:])
                continue
            t0 = time.monotonic()
            reporter.step(stage.name, "building", stage.tag)
            previous = engine.images.find(stage.tag)
            image_id = build_one(stage)
            # Only a finished image gets the stage's tag; the image it replaces (--no-cache) is not left dangling.
            engine.images.tag(image_id, stage.tag, drop_replaced=True, previous=previous)
            record_stage(stage.key, image_id, engine.images.get(image_id).content_key)
            seconds = time.monotonic() - t0
            reporter.step(stage.name, "built", f"{seconds:5.1f} s  {stage.tag}")
            results.append(StageResult(stage.name, stage.tag, image_id, "built", seconds))
            if cache is not None:
                cache.store(stage.name, stage.key, image_id)
    return results


@contextmanager
def _classic_builder(engine: Engine, plan: Plan, wheelhouse: Path, fresh: bool, verbose: bool,
                     reporter: Reporter) -> Iterator[Callable[[PlannedStage], str]]:
    """The classic builder: each step reads the wheelhouse from this host over the build's internal network."""
    network, gateway, subnet = engine.networks.build_network()
    with WheelServer(wheelhouse, plan.lock.files, gateway, {f.url_path: f.data for f in plan.served}, allowed=subnet) as server:
        platform = plan.platform if plan.platform != engine.platform else None
        yield lambda stage: engine.builds.classic(
            stage.dockerfile, stage.name, network=network, nocache=fresh, platform=platform,
            buildargs={"SGLBUILD_WHEELHOUSE": server.url, "PIP_TRUSTED_HOST": gateway, **_stage_args(plan, stage)},
            labels={LABEL_MANAGED: "true", LABEL_STAGE_KEY: stage.key},
            on_line=reporter.build_line if verbose else None,
            on_failure=None if verbose else reporter.build_lines,  # the failed step's last lines, above the error
        )


@contextmanager
def _buildkit_builder(engine: Engine, plan: Plan, wheelhouse: Path, fresh: bool, verbose: bool,
                      reporter: Reporter) -> Iterator[Callable[[PlannedStage], str]]:
    """BuildKit: each stage's wheels and the build's files are a build context, bind-mounted into its steps."""
    with scratch("served", wheelhouse) as tmp:  # beside the wheels: hard links

        def build_one(stage: PlannedStage) -> str:
            served = served_dir(plan, stage, wheelhouse, Path(tmp, stage.name))
            return engine.buildkit.build(
                stage.dockerfile, stage.name, contexts={"sglbuild-served": served}, nocache=fresh, tag=stage.tag,
                platform=plan.platform if plan.platform != engine.platform else None,
                buildargs={"SGLBUILD_WHEELHOUSE": f"http://127.0.0.1:{BUILDKIT_WHEELHOUSE_PORT}/",
                           # BuildKit dates the config and history with it (the Dockerfile's default is not read for that)
                           **({"SOURCE_DATE_EPOCH": str(plan.target.base.source_date_epoch)} if plan.reproducible else {}),
                           **_stage_args(plan, stage)},
                labels={LABEL_MANAGED: "true", LABEL_STAGE_KEY: stage.key},
                on_line=reporter.build_line if verbose else None,
                on_failure=None if verbose else reporter.build_lines,
            )

        yield build_one


def served_dir(plan: Plan, stage: PlannedStage, wheelhouse: Path, where: Path) -> Path:
    """What STAGE's steps may read, and nothing else: its wheels, its Debian packages and the build's tools (hard links), the build's files."""
    where.mkdir(parents=True)
    tools = [w for w in plan.lock.wheels if w.stage == TOOLS]
    for w in (*stage.spec.wheels, *stage.spec.debs, *tools):
        try:
            os.link(wheelhouse / w.filename, where / w.filename)
        except OSError:  # another filesystem: copy
            shutil.copyfile(wheelhouse / w.filename, where / w.filename)
    for f in plan.served:
        (where / f.url_path).parent.mkdir(parents=True, exist_ok=True)
        (where / f.url_path).write_bytes(f.data)
    helper = where / "sglbuild_helpers"  # what serves the rest to the step, on its own loopback
    helper.mkdir()
    for source in sorted(HELPERS_DIR.glob("*.py")):
        shutil.copyfile(source, helper / source.name)
    return where


def _offer(cache: StageCache | None, stages: list[PlannedStage], results: list[StageResult]) -> None:
    """Stages reused from this engine go to the cache too, where it lacks them."""
    if cache is None:
        return
    for stage, result in zip(stages, results):
        if result.status == "reused":
            cache.offer(stage.name, stage.key, result.image_id)


def _trusted(engine: Engine, stage: PlannedStage, reporter: Reporter) -> str | None:
    """The ID of the image STAGE's tag names, if it has the content built for its key here (else None). The content is
    what a process in the image sees: its layers, each named by the hash of its files, and its run-time settings. A
    file changed in a stage image (a commit re-tagged, say) is another layer, caught here at the cost of one lookup;
    the same stage built again by another build (another wheel server's address in its history: another ID) is not.
    Stages with no record (built before it existed) are taken as they are and recorded."""
    image = engine.images.find(stage.tag)
    if image is None:
        return None
    known = stage_image(stage.key)
    content = image.content_key
    if known is None or (image.id != known["id"] and content == known["content"]):
        record_stage(stage.key, image.id, content)
        return image.id
    if image.id != known["id"]:
        reporter.step(stage.name, "changed", f"{stage.tag} is {image.id[:19]}, not the {known['id'][:19]} built for its key; building it again")
        return None
    return image.id


def _reused(stage: PlannedStage, image_id: str, reporter: Reporter) -> StageResult:
    reporter.step(stage.name, "reused", f"  0.0 s  {stage.tag}")
    return StageResult(stage.name, stage.tag, image_id, "reused", 0.0)


def _layer_stages(engine: Engine, built: Built) -> list[str]:
    """Which stage made each layer of the final image (from each stage image's layer count)."""
    names: list[str] = []
    for name, ref in [("base", built.base), *((s.name, s.image_id) for s in built.stages)]:
        count = len(engine.images.get(ref).layers)
        names += [name] * (count - len(names))
    return names


def _check_disk(engine: Engine, plan: Plan, wheelhouse: Path, todo: list[PlannedStage]) -> None:
    """Refuse to start a build that cannot fit: installed wheels take about 2.5x their size."""
    stages = {s.name for s in todo}
    need = sum((wheelhouse / w.filename).stat().st_size for w in plan.lock.files if w.stage in stages)
    need = int(need * 2.5) + (512 << 20)
    try:
        free = shutil.disk_usage(engine.root_dir).free
    except OSError:
        return  # a remote engine: its disk is not ours to measure
    if free < need:
        raise DiskFull(f"{free / 2**30:.1f} GiB free under {engine.root_dir}, the build needs about {need / 2**30:.1f} GiB",
                       "free space (sglbuild gc removes what sglbuild left) and build again")
