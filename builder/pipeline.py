"""The pipeline as one straight line: profile -> lock -> wheelhouse -> plan -> build -> verify -> tag, then push.

Each step is its room's (``inputs``, ``assemble``, ``check``, ``ship``), testable alone; a command that runs more than
one step calls one function here, and the CLI prints what it returns. A target's plan for a platform is made here once
and carried through: the build returns what it built (the plan as built, its evidence stage's image, the image), and the
gate, the tags and the push take that.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .assemble.cache import StageCache
from .assemble.plan import Plan, make_plan
from .assemble.stages import Built, build_image, build_order, build_stages
from .check import evidence
from .contracts import AOT_BUILD_PLATFORM
from .check.attested import add_attestations, verify_attested
from .check.inspect import ImageInfo, RemoteInfo, inspect_image, inspect_remote
from .check.report import Report
from .check.repro import REPRO_REPO, ReproReport, check_reproducible
from .check.verify import parse_archs, repository_lock, verify
from .errors import EngineUnavailable, InputError, LockError, NotReproducible, SglbuildError
from .inputs.lockfile import check_locks, read_lock_file
from .inputs.profile import Profile, Target
from .oci import is_remote_ref
from .ship.registry import Pushed, Signing, join, push, push_index, push_platform
from .ship.tag import Released, release
from .sign import load_private, load_public
from .ui import Reporter

if TYPE_CHECKING:
    from .engine import Engine


# -- plans ------------------------------------------------------------------------------------------------

def builder_kind(connect: Callable[[], Engine]) -> str:
    """The engine's build path; without an engine, SGLBUILD_BUILDER's or the classic one (render and plan work offline)."""
    from .engine import requested_builder

    try:
        return connect().builder
    except EngineUnavailable:
        return requested_builder() or "classic"


def plans(profile: Profile, target: Target, builder: str, platforms: tuple[str, ...] = (), repo: str | None = None) -> dict[str, Plan]:
    """TARGET's plan for each of PLATFORMS (every one it declares by default), each made once; a derived target's
    completed from this machine's earlier evidence (else its final stage waits for the build's evidence step)."""
    unknown = [p for p in platforms if p not in target.platform_names]
    if unknown:
        raise InputError(f"target {target.name!r} has no platform {unknown[0]}", f"its platforms: {', '.join(target.platform_names)}")
    locks = check_locks(profile, target)
    out = {}
    for platform in platforms or target.platform_names:
        plan = make_plan(target, locks.lock(platform), profile.revision, builder=builder, repo=repo)
        known = evidence.cached(plan) if plan.awaiting_evidence else None
        out[platform] = plan.with_derived(known) if known is not None else plan
    return out


@dataclass
class PlanView:
    plans: list[Plan]
    present: dict[str, bool] | None  # each stage tag: on the engine or not (None: no engine answered)
    unlocked: list[str]  # with --all: a line for each target that has no up-to-date lock


def show_plans(profile: Profile, names: list[str | None], connect: Callable[[], Engine], *, every: bool = False,
               platforms: tuple[str, ...] = ()) -> PlanView:
    """The plans of NAMES (every target with EVERY), each platform of each, and whether the next build reuses each stage."""
    builder = builder_kind(connect)
    found, unlocked = [], []
    for name in names:
        target = profile.target(name)
        try:
            found += plans(profile, target, builder, platforms if not every else ()).values()
        except LockError as exc:
            if not every:
                raise
            unlocked.append(f"{target.name}: no plan: {exc}")  # --all shows every target that has an up-to-date lock
    try:
        engine = connect()
        tags = {p.base for p in found} | {s.tag for p in found for s in (*p.stages, *(p.cross.stages if p.cross else ()))}
        present: dict[str, bool] | None = {t: engine.images.find(t) is not None for t in tags}
    except EngineUnavailable:
        present = None  # the plan stands without an engine; only "reuse or build" is unknown
    return PlanView(found, present, unlocked)


# -- build: plan -> base and stages (-> evidence) -> normalize -> gate -> tag --------------------------------

@dataclass
class Outcome:
    built: Built
    released: Released

    def to_dict(self) -> dict[str, Any]:
        return {**self.built.to_dict(), **self.released.to_dict()}


def build(engine: Engine, profile: Profile, name: str | None, wheelhouse: Path, reporter: Reporter, *,
          platforms: tuple[str, ...] = (), fresh: bool = False, verbose: bool = False, cache_repo: str | None = None) -> list[Outcome]:
    """Build TARGET's image for each platform (the engine's own first), gate it and tag it; what each one was."""
    target = profile.target(name)
    order = build_order(engine, target, platforms)  # an arm64 image needs emulation here, or one line says so, before anything
    planned = plans(profile, target, engine.builder, tuple(order))
    outcomes = []
    for platform in order:
        plan = planned[platform]
        where = f", {platform}" if target.declares_platforms else ""
        reporter.info(f"building {target.name} (lock sha256:{plan.lock.digest[:16]}, {plan.builder} builder{where})")
        cache = StageCache(engine, cache_repo, reporter) if cache_repo else None
        built = build_image(engine, plan, wheelhouse, reporter, fresh=fresh, verbose=verbose, cache=cache,
                            derive=lambda p, image: evidence.complete(engine, p, image, reporter, fresh=fresh))
        released = release(engine, built, reporter, profile.root / "out")
        reporter.info(f"{released.tag}  {built.image_id[:19]}  {built.size / 1e9:.2f} GB  {built.seconds:.1f} s")
        outcomes.append(Outcome(built, released))
    if cache_repo and AOT_BUILD_PLATFORM in order:  # the other platforms' jobs pull the FlashInfer modules compiled here
        others = tuple(p for p in target.aot_cross_platforms() if p not in order)
        for platform, plan in (plans(profile, target, engine.builder, others) if others else {}).items():
            if plan.cross is not None:
                reporter.info(f"FlashInfer's modules for {platform}, compiled here for its build: {plan.cross.stages[-1].tag}")
                build_stages(engine, plan.cross, wheelhouse, reporter, verbose=verbose, cache=StageCache(engine, cache_repo, reporter))
    return outcomes


def reproducible(engine: Engine, profile: Profile, name: str | None, wheelhouse: Path, reporter: Reporter, *,
                 platforms: tuple[str, ...] = ()) -> list[tuple[str, ReproReport]]:
    """Each platform of TARGET built twice from scratch and compared; raises NotReproducible after the first that
    differs (its report is the last one returned with the exception's)."""
    target = profile.target(name)
    reports = []
    for platform in build_order(engine, target, platforms):
        twice = tuple(plans(profile, target, engine.builder, (platform,), repo=f"{REPRO_REPO}/{side}")[platform] for side in "ab")
        reports.append((platform, check_reproducible(engine, twice, wheelhouse, reporter)))  # type: ignore[arg-type]
    return reports


def not_reproducible(target: str, reports: list[tuple[str, ReproReport]]) -> NotReproducible | None:
    differs = [platform for platform, r in reports if not r.identical]
    if not differs:
        return None
    return NotReproducible(f"{target} ({differs[0]}) is not reproducible: two builds from scratch differ", "see the files listed above")


# -- verify and inspect any image -------------------------------------------------------------------------

def verify_image(engine: Engine, profile: Profile | None, image: str, *, archs: str | None = None, lock_file: str | None = None,
                 gpu: str = "auto", model: str | None = None, fresh: bool = False, platform: str | None = None,
                 key_file: str | None = None, require_attestation: bool = False, run_args: list[str] | None = None) -> Report:
    """IMAGE verified: probed here (pulled first when it is REPO@sha256:... not on this engine, only PLATFORM's image of
    an index), with the registry's attestations checked beside when a key is given or they are required; or, for
    REPO@sha256:... not on this engine with a key or --require-attestation, judged from its attestations alone."""
    key = load_public(Path(key_file)) if key_file else None
    attested = (key is not None or require_attestation) and "@sha256:" in image
    if attested and engine.images.find(image) is None:  # the registry's evidence alone: no layer pulled
        return verify_attested(engine, image, key, platform or engine.platform, required=require_attestation)
    found = engine.image_for(image, platform)  # a digest not here: pulled (one platform of an index)
    report = verify(engine, found.id, archs=parse_archs(archs) if archs else None, gpu=gpu, model=model,
                    repo_lock=repository_lock(profile, found.labels, found.platform),
                    lock=read_lock_file(Path(lock_file)) if lock_file else None, fresh=fresh, run_args=run_args)
    report.subject = f"{image} ({found.platform})" if platform else image
    if attested:  # the probe ran, and the registry's attestations are checked beside it
        add_attestations(engine, report, image, key, found.platform, required=require_attestation)
    return report


def inspect(engine: Engine, image: str, key_file: str | None = None,
            write: dict[str, str | None] | None = None) -> tuple[ImageInfo | RemoteInfo, list[str]]:
    """How IMAGE was built: from this engine, or (a REPO@sha256:... or REPO:TAG it does not have) from its registry
    without a layer read; WRITE: {member of the image's sglbuild directory: path to write it to}. The paths written."""
    wanted = {member: path for member, path in (write or {}).items() if path}
    if engine.images.find(image) is None and is_remote_ref(image):
        if wanted:
            raise InputError(f"{image} is not on this engine: its lock and SBOM are inside its layers", "pull it first")
        return inspect_remote(engine, image, load_public(Path(key_file)) if key_file else None), []
    info = inspect_image(engine, image)
    for member, path in wanted.items():
        if member not in info.files:
            raise InputError(f"{image} carries no {member}: it was not built by sglbuild")
        Path(path).write_text(info.files[member])
    return info, list(wanted.values())


# -- ship -------------------------------------------------------------------------------------------------

def push_target_or_image(engine: Engine, profile: Profile | None, what: str, repo: str, *, force: bool = False,
                         sign_key: str | None = None, platform: str | None = None) -> Pushed:
    """WHAT (an image, or a target with platforms: each platform's image and one index; with PLATFORM, that platform's
    image alone) pushed to REPO, with its attestations; the provenance names the stage keys of the plans of WHAT's
    target, made once per platform."""
    key = load_private(Path(sign_key)) if sign_key else None
    targets = set(profile.targets) if profile is not None else set()
    if platform is not None:
        if profile is None or what not in targets:
            raise InputError(f"push --platform takes a target of the profile, not {what!r}", "name a target, or push the image alone")
        target = profile.target(what)
        return push_platform(engine, target, platform, repo, force, _signing(engine, profile, target, key, platform))
    if what in targets and profile is not None and profile.target(what).declares_platforms:
        target = profile.target(what)
        return push_index(engine, target, repo, force, _signing(engine, profile, target, key))
    image = engine.images.get(what)
    named = image.labels.get("io.sglbuild.target")
    target = profile.targets.get(named) if profile is not None and named else None
    return push(engine, what, repo, force, _signing(engine, profile, target, key, image.platform))


def join_target(engine: Engine, profile: Profile | None, name: str | None, refs: list[str], key_file: str) -> Pushed:
    """The index of target NAME from its platforms' digests in the registry, each checked with the public key."""
    if profile is None:
        raise InputError("join needs the profile that declares the target's platforms", "run it in the project, or pass --profile")
    return join(engine, profile.target(name), refs, load_public(Path(key_file)))


def _signing(engine: Engine, profile: Profile | None, target: Target | None, key: Any, platform: str | None = None) -> Signing:
    if profile is None:
        return Signing(key)
    digest = hashlib.sha256(profile.path.read_bytes()).hexdigest()
    if target is None:
        return Signing(key, (), digest)
    try:
        made = plans(profile, target, engine.builder, (platform,) if platform in target.platform_names else ())
    except SglbuildError:  # a target not locked (or out of date) built no image that could be pushed from here
        return Signing(key, (), digest)
    return Signing(key, tuple(made.values()), digest)


def image_of(profile: Profile | None, image_or_target: str | None, machine_platform: str) -> str:
    """The image a command is about: IMAGE as given, or a target's image for this machine's platform."""
    if image_or_target is None or (profile is not None and image_or_target in profile.targets):
        if profile is None:
            raise InputError("no image given and no profile here", "name an image")
        return profile.target(image_or_target).platform_tag(machine_platform)
    return image_or_target
