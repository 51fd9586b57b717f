"""Step 4, plan: what a build of one target makes, computed once from the profile and the lock.

The stages in order (system, one per ``[[stage]]``, final), each with its Dockerfile text,
its key and its tag; the labels and server flags of the final image; the SBOM; and the
files the build serves beside the wheels. ``build``, ``plan``, ``render``, the
reproducibility check and the benchmarks all walk this one object.

A stage's key is the sha256 of its Dockerfile text, which names its parent's tag and pins
every wheel it installs by hash, and nothing else: no target name, revision or human tag.
Those are labels, applied to the final image's config by :mod:`builder.assemble.normalize`, so
targets with the same stages share their images and a new commit rebuilds nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

from .. import __version__
from ..contracts import (
    AOT_BUILD_PLATFORM,
    AOT_CROSS_OUT,
    AOT_CROSS_RUNTIME,
    AOT_CROSS_SYSROOT,
    AOT_WORKSPACE,
    BASE_REPO,
    BUILDKIT_WHEELHOUSE_PORT,
    DEFAULT_PLATFORM,
    ENTRYPOINT_IN_IMAGE,
    GNU_TRIPLETS,
    IN_IMAGE_DIR,
    LABEL_FLASHINFER_AOT,
    LABEL_GPU_ARCH,
    LABEL_LOCK_DIGEST,
    LABEL_REQUIRE_NATIVE, LABEL_UNLOADABLE,
    LABEL_SERVE_FLAGS,
    LABEL_SGLANG_VERSION,
    LABEL_TARGET,
    LABEL_VERSION,
    LOCK_IN_IMAGE,
    OCI_CREATED,
    OCI_DESCRIPTION,
    OCI_REVISION,
    OCI_SOURCE,
    OCI_TITLE,
    OCI_VERSION,
    SBOM_IN_IMAGE,
    SERVED_AOT_CROSS,
    SERVED_AOT_SCRIPT,
    SERVED_ENTRYPOINT,
    SERVED_LOCK,
    SERVED_SBOM,
    STAGE_AOT,
    STAGE_AOT_CROSS,
    STAGE_FINAL,
    STAGE_REPO,
    STAGE_SYSTEM,
    STAGE_WHEELS,
    TOOLS,
    VENV,
)
from ..errors import InputError
from ..inputs.serving import server_flags
from ..inputs.lockfile import Deb, Lock, Wheel, parse_lock_file
from ..inputs.profile import Target
from ..inputs.sbom import sbom_json
from .helpers_wheel import helpers_wheel
from .render import render_dockerfile, render_entrypoint


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: str  # contracts.STAGE_SYSTEM | STAGE_WHEELS | STAGE_AOT | STAGE_AOT_CROSS | STAGE_FINAL
    parent: str  # the image it builds FROM: the base, or the previous stage's tag (its name in the whole file)
    wheels: tuple[Wheel, ...] = ()
    debs: tuple[Deb, ...] = ()  # Debian packages it installs first
    cuda_home: str | None = None  # where it lays out a CUDA toolkit from the venv's NVIDIA wheels
    aot: str = ""  # STAGE_AOT: the declaration (FlashInferAot.to_json) it compiles
    archs: tuple[str, ...] = ()  # STAGE_AOT: for these GPU architectures
    script: ServedFile | None = None  # STAGE_AOT: the code that compiles them (served, checked by sha256)
    triplet: str = ""  # STAGE_AOT_CROSS: the GNU triplet of the platform it compiles the host code for
    cross_from: str = ""  # STAGE_AOT of a cross-compiled platform: the tag of the STAGE_AOT_CROSS stage it unpacks
    cross_file: str = ""  # ... and the path the build serves that stage's modules at (a tar, its sha256 a build argument)


@dataclass(frozen=True)
class PlannedStage:
    spec: StageSpec
    dockerfile: str  # exactly what the engine builds
    key: str  # sha256 of that text
    tag: str  # REPO:NAME-KEY16: found by this tag, the stage is not built again

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class ServedFile:
    """A file the wheel server hands the build beside the wheels; the step checks its sha256."""

    url_path: str
    data: bytes
    dest: str = ""  # where the final stage writes it in the image ("" for what a step reads: the helpers, the AOT code)
    mode: str = "0644"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Plan:
    target: Target
    lock: Lock
    base: str  # the base image's reference
    stages: tuple[PlannedStage, ...]
    labels: dict[str, str]  # the final image's labels (set in its config by normalize)
    serve_flags: tuple[str, ...]
    sbom: str
    served: tuple[ServedFile, ...]
    values: dict = field(repr=False)  # what the template renders with
    revision: str = "unknown"
    builder: str = "classic"  # "classic" (docker-py, the wheelhouse over HTTP) | "buildkit" (buildx, bind-mounted)
    reproducible: bool = True
    repo: str | None = None  # stages tag into REPO instead of the shared stage repository
    awaiting_evidence: bool = False  # [serve] preset = "derived" and no evidence yet: no final stage until there is
    # FlashInfer's modules for this platform, cross-compiled on AOT_BUILD_PLATFORM: that platform's stages up to its
    # toolchain and the STAGE_AOT_CROSS stage (None where this platform compiles its own, or declares none)
    cross: "Plan | None" = None

    @property
    def evidence_stage(self) -> PlannedStage:
        """The stage whose image the evidence for derived settings is read from: the last one that installs wheels."""
        return [s for s in self.stages if s.spec.kind == STAGE_WHEELS][-1]

    def with_derived(self, flags: tuple[str, ...]) -> "Plan":
        """This plan, completed with the server flags derived from the evidence: its final stage added (the stages below it
        and their keys do not depend on the flags)."""
        final_files = _final_files(self.lock, self.sbom, flags)
        values = {**self.values, "final_files": final_files, "entrypoint": ENTRYPOINT_IN_IMAGE if flags else ""}
        spec = replace(StageSpec(STAGE_FINAL, STAGE_FINAL, ""), parent=self.stages[-1].tag)
        final = _planned(values, spec, self.repo)
        return replace(self, stages=(*self.stages, final), labels=labels(self.target, self.lock, self.revision, flags),
                       serve_flags=flags, served=(*final_files, *(f for f in self.served if not f.dest)), values=values,
                       awaiting_evidence=False)

    @property
    def final(self) -> PlannedStage:
        if self.awaiting_evidence:
            raise ValueError("a derived target's final stage waits for the evidence (builder.check.evidence.complete)")
        return self.stages[-1]

    @property
    def platform(self) -> str:
        """The Docker platform of the image this plan builds (linux/amd64, linux/arm64)."""
        return self.lock.platform_name

    @property
    def archs(self) -> tuple[str, ...]:
        """The GPU architectures this platform's image must serve."""
        return self.target.archs(self.platform)

    @property
    def human_tag(self) -> str:
        """IMAGE:TAG (a multi-platform target's: IMAGE:TAG-ARCH for this platform; IMAGE:TAG names the engine's own)."""
        return self.target.platform_tag(self.platform)

    def immutable_tag(self, image_id: str) -> str:
        """IMAGE:TAG-<image ID>: named after the image itself, so it can never move to another."""
        return f"{self.repo}:final" if self.repo else f"{self.human_tag}-{image_id.split(':')[-1][:12]}"

    @cached_property
    def dockerfile(self) -> str:
        """The whole multi-stage Dockerfile, for people to read and diff."""
        whole = [replace(s.spec, parent=self.base if i == 0 else self.stages[i - 1].name) for i, s in enumerate(self.stages)]
        text = render_dockerfile(self.values, whole, header=True)
        if self.cross:  # what the flashinfer-aot stage above unpacks: built on the build platform, over its toolchain
            text += f"\n# {self.cross.stages[-1].name}: built on {self.cross.platform}; {STAGE_AOT} above unpacks its modules\n"
            text += self.cross.stages[-1].dockerfile
        if self.awaiting_evidence:
            text += (f"\n# final: its server flags are derived from the evidence of stage {self.evidence_stage.name}'s image\n"
                     "# (sglbuild build reads it; sglbuild render shows the stage once that image was probed here)\n")
        return text

    def to_dict(self, present: dict[str, bool] | None = None) -> dict:
        """``sglbuild plan --json``: PRESENT says which stage tags the engine already has."""
        def state(tag: str) -> str:
            return "unknown" if present is None else "reuse" if present.get(tag) else "build"

        return {
            "target": self.target.name,
            "tag": self.target.human_tag,  # the tag users pull (promote moves it in the registry)
            "platform": self.platform,
            "archs": list(self.archs),
            "lock": f"sha256:{self.lock.digest}",
            "builder": self.builder,
            "base": {"ref": self.base, "next_build": state(self.base)},
            "stages": [{"name": s.name, "kind": s.spec.kind, "key": s.key, "tag": s.tag, "parent": s.spec.parent,
                        "wheels": len(s.spec.wheels), "next_build": state(s.tag)} for s in self.stages]
                      + ([{"name": STAGE_FINAL, "kind": STAGE_FINAL, "key": None, "tag": None,
                           "next_build": f"build once {self.evidence_stage.name} is probed (derived flags)"}] if self.awaiting_evidence else []),
            "labels": self.labels,
            "serve_flags": list(self.serve_flags),
            **({"cross": {"platform": self.cross.platform, "name": self.cross.stages[-1].name, "key": self.cross.stages[-1].key,
                          "tag": self.cross.stages[-1].tag, "parent": self.cross.stages[-1].spec.parent,
                          "next_build": state(self.cross.stages[-1].tag)}} if self.cross else {}),
        }


def stage_specs(target: Target, lock: Lock, cross: PlannedStage | None = None) -> list[StageSpec]:
    """The build's stages in order: system, one per [[stage]], FlashInfer's modules where declared for this platform
    (unpacked from CROSS where they are cross-compiled), final (parents filled in by make_plan)."""
    specs = [StageSpec(STAGE_SYSTEM, STAGE_SYSTEM, "")]
    specs += [StageSpec(s.name, STAGE_WHEELS, "", tuple(lock.stage_wheels(s.name)), tuple(lock.stage_debs(s.name)), s.cuda_home)
              for s in target.stages]
    if aot_declared(target, lock):
        aot = target.flashinfer_aot.to_json()  # type: ignore[union-attr]
        archs = target.archs(lock.platform_name)
        if cross is None:
            specs.append(StageSpec(STAGE_AOT, STAGE_AOT, "", aot=aot, archs=archs, script=aot_script()))
        else:
            specs.append(StageSpec(STAGE_AOT, STAGE_AOT, "", aot=aot, archs=archs, cross_from=cross.tag,
                                   cross_file=SERVED_AOT_CROSS.format(key=cross.key[:16])))
    return specs + [StageSpec(STAGE_FINAL, STAGE_FINAL, "")]


def cross_plan(target: Target, lock: Lock, revision: str, *, reproducible: bool, repo: str | None, builder: str) -> Plan | None:
    """Where LOCK's platform has its FlashInfer modules cross-compiled: AOT_BUILD_PLATFORM's plan cut after its last
    wheels stage (the toolchain), with the STAGE_AOT_CROSS stage over it. That stage installs Debian's cross compiler
    (locked in AOT_BUILD_PLATFORM's closure) and unpacks this platform's CUDA runtime wheel to link against; its key
    follows the toolchain's tag, those files, the declaration, the architectures and the code, as any stage's."""
    if lock.platform_name not in target.aot_cross_platforms() or not aot_declared(target, lock):
        return None
    if lock.file_text is None:
        raise ValueError("a cross-compiled platform's plan needs its whole lock file (the build platform's closure)")
    host_lock = parse_lock_file(lock.file_text, f"{target.name}'s lock").lock(AOT_BUILD_PLATFORM)
    runtime = lock.wheel(AOT_CROSS_RUNTIME)
    if runtime is None:
        raise InputError(f"target {target.name!r} cross-compiles FlashInfer's modules for {lock.platform_name} but its lock "
                         f"has no {AOT_CROSS_RUNTIME} there", "the modules link that platform's libcudart: lock a torch that needs it")
    # under a REPO (the reproducibility check's), the build platform's stages and base go to their own: REPO:base is ours
    host_repo = f"{repo}-{AOT_BUILD_PLATFORM.rpartition('/')[2]}" if repo else None
    host = make_plan(target, host_lock, revision, reproducible=reproducible, repo=host_repo, derived=(), builder=builder)
    below = [s for s in host.stages if s.spec.kind in (STAGE_SYSTEM, STAGE_WHEELS)]
    runtime = replace(runtime, stage=STAGE_AOT_CROSS)
    spec = StageSpec(STAGE_AOT_CROSS, STAGE_AOT_CROSS, below[-1].tag, wheels=(runtime,),
                     debs=tuple(host_lock.stage_debs(STAGE_AOT_CROSS)), aot=target.flashinfer_aot.to_json(),  # type: ignore[union-attr]
                     archs=target.archs(lock.platform_name), script=aot_script(), triplet=GNU_TRIPLETS[lock.platform_name])
    if not spec.debs:
        raise InputError(f"target {target.name!r}: the {AOT_BUILD_PLATFORM} closure of its lock has no cross compiler for "
                         f"{lock.platform_name}", f"lock it again (sglbuild lock {target.name})")
    stage = _planned(host.values, spec, host_repo)
    return replace(host, stages=(*below, stage), lock=replace(host_lock, wheels=[*host_lock.wheels, runtime]), cross=None)


def aot_script() -> ServedFile:
    """The in-image code the flashinfer-aot stage runs (builder/probe/flashinfer_aot.py, which verify's probe runs too)."""
    return ServedFile(SERVED_AOT_SCRIPT, (Path(__file__).resolve().parent.parent / "probe" / "flashinfer_aot.py").read_bytes())


def aot_declared(target: Target, lock: Lock) -> bool:
    """Whether this platform's image carries FlashInfer's modules built ahead of time (and so their stage and label)."""
    if target.flashinfer_aot is None or not target.flashinfer_aot.covers(lock.platform_name):
        return False
    if lock.wheel("flashinfer-python") is None:
        raise InputError(f"target {target.name!r} declares [flashinfer_aot] but its lock has no flashinfer-python")
    if not any(s.cuda_home for s in target.stages):  # the stage compiles with $CUDA_HOME/bin/nvcc
        raise InputError(f"target {target.name!r} declares [flashinfer_aot] but no stage sets cuda_home",
                         "add a stage with the nvcc wheels and cuda_home (as blackwell's toolchain stage)")
    return True


def labels(target: Target, lock: Lock, revision: str, flags: tuple[str, ...]) -> dict[str, str]:
    created = datetime.fromtimestamp(target.base.source_date_epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sglang = lock.wheel("sglang")
    return dict(sorted({
        OCI_TITLE: target.platform_tag(lock.platform_name),
        OCI_DESCRIPTION: target.description,
        OCI_VERSION: f"{target.tag}-{lock.digest[:12]}",
        OCI_REVISION: revision,
        OCI_CREATED: created,
        OCI_SOURCE: target.source,
        LABEL_VERSION: __version__,
        LABEL_TARGET: target.name,
        LABEL_LOCK_DIGEST: f"sha256:{lock.digest}",
        LABEL_GPU_ARCH: ",".join(target.archs(lock.platform_name)),
        LABEL_SGLANG_VERSION: sglang.version if sglang else "",
        LABEL_SERVE_FLAGS: json.dumps(list(flags)),
        LABEL_REQUIRE_NATIVE: json.dumps(list(target.require_native)),
        # Only where declared: images of targets without it keep their labels, so their IDs.
        **({LABEL_UNLOADABLE: json.dumps(dict(target.unloadable), sort_keys=True)} if target.unloadable else {}),
        **({LABEL_FLASHINFER_AOT: target.flashinfer_aot.to_json()} if aot_declared(target, lock) else {}),
    }.items()))


def target_flags(target: Target, lock: Lock) -> tuple[str, ...]:
    """The default server flags, spelled for the locked SGLang (none without [serve]; derived ones come from evidence)."""
    if target.serve is None:
        return ()
    sglang = lock.wheel("sglang")
    if sglang is None:
        raise InputError(f"target {target.name!r} has [serve] settings but its lock has no sglang")
    if target.serve.derived:
        raise ValueError("derived server flags come from the evidence, not the profile")
    return tuple(server_flags(target.serve, sglang.version))


def base_key(target: Target, lock: Lock) -> str:
    """What the base depends on: the suite, mirror, epoch, packages asked for, the locked versions, the architecture."""
    inputs = {"suite": target.base.suite, "mirror": target.base.mirror, "epoch": target.base.source_date_epoch,
              "include": sorted(target.base.packages), "debian": lock.debian, "image": lock.base_image}
    if lock.platform_name != DEFAULT_PLATFORM:  # only there: amd64 bases keep their keys (and images)
        inputs["platform"] = lock.platform_name
    blob = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def base_ref(target: Target, lock: Lock) -> str:
    """The base image's reference: a registry base by digest, a bootstrapped one by its key."""
    if not target.base.bootstrapped:
        return target.base.image or ""
    return f"{BASE_REPO}:{base_key(target, lock)[:16]}"


def make_plan(target: Target, lock: Lock, revision: str, *, reproducible: bool = True, repo: str | None = None,
              derived: tuple[str, ...] | None = None, builder: str = "classic") -> Plan:
    """The plan; for a target whose settings are derived, DERIVED are the flags the evidence gave (None: not yet)."""
    awaiting = bool(target.serve and target.serve.derived and derived is None)
    flags = (derived or ()) if target.serve and target.serve.derived else target_flags(target, lock)
    sbom = sbom_json(target, lock)
    helpers, helpers_data = helpers_wheel()
    final_files = _final_files(lock, sbom, flags)
    uv = next((w for w in lock.stage_wheels(TOOLS) if w.name == "uv"), None)
    values = {
        "sglbuild_version": __version__, "target_name": target.name, "reproducible": reproducible,
        "epoch": target.base.source_date_epoch, "compile_bytecode": target.compile_bytecode, "venv": VENV,
        "in_image_dir": IN_IMAGE_DIR, "uv": uv, "helpers": helpers, "env": list(target.env),
        "final_files": final_files, "post_install": list(target.post_install),
        "entrypoint": ENTRYPOINT_IN_IMAGE if flags else "", "buildkit": builder == "buildkit",
        "buildkit_port": BUILDKIT_WHEELHOUSE_PORT,
        "site_packages": f"{VENV}/lib/python{lock.platform.python_short}/site-packages",
        "aot_workspace": AOT_WORKSPACE, "aot_cross_out": AOT_CROSS_OUT, "aot_cross_sysroot": AOT_CROSS_SYSROOT,
    }
    base = f"{repo}:base" if repo else base_ref(target, lock)
    cross = cross_plan(target, lock, revision, reproducible=reproducible, repo=repo, builder=builder)
    specs = stage_specs(target, lock, cross.stages[-1] if cross else None)
    stages: list[PlannedStage] = []
    parent = base
    for spec in specs[:-1] if awaiting else specs:
        stages.append(_planned(values, replace(spec, parent=parent), repo))
        parent = stages[-1].tag
    extra = tuple(s.spec.script for s in stages if s.spec.script)  # the AOT stage's code, where it has one
    return Plan(target=target, lock=lock, base=base, stages=tuple(stages), labels=labels(target, lock, revision, flags),
                serve_flags=flags, sbom=sbom, served=(*final_files, *extra, ServedFile(helpers.filename, helpers_data)),
                values=values, revision=revision, builder=builder, reproducible=reproducible, repo=repo, awaiting_evidence=awaiting,
                cross=cross)


def _final_files(lock: Lock, sbom: str, flags: tuple[str, ...]) -> list[ServedFile]:
    """What the final stage writes into the image: the lock, the SBOM, and the entrypoint that carries FLAGS."""
    files = [ServedFile(SERVED_LOCK, lock.text().encode(), LOCK_IN_IMAGE), ServedFile(SERVED_SBOM, sbom.encode(), SBOM_IN_IMAGE)]
    if flags:
        files.append(ServedFile(SERVED_ENTRYPOINT, render_entrypoint(flags).encode(), ENTRYPOINT_IN_IMAGE, "0755"))
    return files


def _planned(values: dict, spec: StageSpec, repo: str | None) -> PlannedStage:
    """SPEC's Dockerfile text, rendered with VALUES, its key (the text's sha256) and its tag."""
    text = render_dockerfile(values, [spec], header=False)
    key = hashlib.sha256(text.encode()).hexdigest()
    return PlannedStage(spec, text, key, f"{repo or STAGE_REPO}:{spec.name}-{key[:16]}")


def plans_text(plans: list[Plan], present: dict[str, bool] | None) -> str:
    """``sglbuild plan``: per target, each stage, its key and what the next build does with it.

    With several targets, a stage image two of them share is marked with the others' names.
    """
    users: dict[str, list[str]] = {}
    for p in plans:
        for tag in (p.base, *(s.tag for s in p.stages), *((p.cross.stages[-1].tag,) if p.cross else ())):
            users.setdefault(tag, []).append(p.target.name)

    def row(name: str, tag: str, key: str, owner: str) -> str:
        state = "?" if present is None else "reuse" if present.get(tag) else "build"
        shared = [u for u in users[tag] if u != owner]
        return f"  {name:<14} {key[:16]:<16}  {state:<5}  {tag}" + (f"  (shared with {', '.join(shared)})" if shared else "")

    lines = []
    for p in plans:
        where = f", {p.platform}" if p.target.declares_platforms else ""
        lines.append(f"{p.target.name}  lock sha256:{p.lock.digest[:16]}  -> {p.human_tag}  ({p.builder} builder{where})")
        lines.append(row("base", p.base, p.base.rpartition(":")[2], p.target.name))
        lines += [row(s.name, s.tag, s.key, p.target.name) for s in p.stages]
        if p.cross:  # built on the build platform, over its toolchain: the flashinfer-aot stage above unpacks its modules
            c = p.cross.stages[-1]
            lines.append(row(c.name, c.tag, c.key, p.target.name) + f"  ({p.cross.platform}, over {c.spec.parent})")
        if p.awaiting_evidence:
            lines.append(f"  {'final':<14} {'(pending)':<16}  build  flags derived from the evidence of {p.evidence_stage.name}")
    if present is None:
        lines.append("(no engine answers: '?' where it would say reuse or build)")
    return "\n".join(lines) + "\n"
