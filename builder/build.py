"""Steps 5-7, build -> smoke test -> tag: stages keyed by content, then tags moved last.

Each stage is rendered on its own ``FROM`` its parent's tag; its key is the sha256 of
that text (which pins every wheel by hash), so a stage whose inputs did not change is
found by tag and not rebuilt, and a changed pin rebuilds only the stages after it.
Tags are applied only to finished images; the human tag moves only after the smoke
tests pass.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import docker
import docker.errors

from .base import ensure_base
from .engine import LABEL_MANAGED, build_network, context_tar, find_image, git_revision, run_in_image, tag_image
from .errors import BuildFailed, DiskFull, EngineError, Interrupted, SmokeTestFailed
from .lock import Lock
from .profile import Profile, Target
from .render import StageSpec, render, serve_flags, stage_specs
from .server import WheelServer
from .ui import Reporter
from .wheelhouse import verify_wheelhouse


@dataclass(frozen=True)
class PlannedStage:
    spec: StageSpec
    dockerfile: str
    key: str
    tag: str


@dataclass
class StageResult:
    name: str
    tag: str
    image_id: str
    status: str  # "reused" | "built"
    seconds: float


@dataclass
class BuildResult:
    target: str
    lock_digest: str
    image_id: str = ""
    size: int = 0
    immutable_tag: str = ""
    tag: str | None = None  # the human tag, once the smoke tests passed
    base: str = ""
    stages: list[StageResult] = field(default_factory=list)
    smoke: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def stage_repo(target: Target) -> str:
    return f"sglbuild/{target.name}"


def plan(target: Target, lock: Lock, base: str, revision: str) -> list[PlannedStage]:
    stages: list[PlannedStage] = []
    parent = base
    for spec in stage_specs(target, lock, base):
        single = replace(spec, parent=parent)
        text = render(target, lock, [single], revision)
        key = hashlib.sha256(text.encode()).hexdigest()
        stages.append(PlannedStage(single, text, key, f"{stage_repo(target)}:{spec.name}-{key[:16]}"))
        parent = stages[-1].tag
    return stages


def build(profile: Profile, target: Target, lock: Lock, wheelhouse: Path, reporter: Reporter,
          client: docker.DockerClient, verbose: bool = False) -> BuildResult:
    started = time.monotonic()
    result = BuildResult(target=target.name, lock_digest=f"sha256:{lock.digest}")
    verify_wheelhouse(lock, wheelhouse)

    t0 = time.monotonic()
    result.base, built = ensure_base(client, target, lock)
    reporter.step("base", "built" if built else "reused", f"{time.monotonic() - t0:5.1f} s  {result.base}")

    stages = plan(target, lock, result.base, git_revision(profile.root))
    todo = [s for s in stages if find_image(client, s.tag) is None]
    if todo:
        _check_disk(client, lock, wheelhouse, todo)
        network, gateway = build_network(client)
        with WheelServer(wheelhouse, lock.wheels, gateway) as server:
            for stage in stages:
                result.stages.append(_stage(client, stage, stage in todo, network, server.url, reporter, verbose))
    else:
        for stage in stages:
            result.stages.append(_stage(client, stage, False, "", "", reporter, verbose))

    final = result.stages[-1]
    image = client.images.get(final.image_id)
    result.image_id, result.size = image.id, int(image.attrs.get("Size", 0))
    result.immutable_tag = f"{target.human_tag}-{stages[-1].key[:12]}"
    tag_image(client, image.id, result.immutable_tag)

    current = find_image(client, target.human_tag)
    if current is not None and current.id == image.id:
        result.tag = target.human_tag  # already smoke-tested when the tag was moved here
        reporter.step("smoke", "reused", f"{target.human_tag} already is this image")
    else:
        result.smoke = smoke_test(client, image.id, target, serve_flags(target, lock), reporter)
        tag_image(client, image.id, target.human_tag)
        result.tag = target.human_tag
    reporter.step("tag", "tagged", f"{target.human_tag}  {result.immutable_tag}")
    result.seconds = time.monotonic() - started
    return result


def _stage(client: docker.DockerClient, stage: PlannedStage, needed: bool, network: str, wheel_url: str,
           reporter: Reporter, verbose: bool) -> StageResult:
    name = stage.spec.name
    t0 = time.monotonic()
    if not needed:
        image = client.images.get(stage.tag)
        reporter.step(name, "reused", f"  0.0 s  {stage.tag}")
        return StageResult(name, stage.tag, image.id, "reused", 0.0)
    reporter.step(name, "building", stage.tag)
    image_id = _docker_build(client, stage, network, wheel_url, reporter, verbose)
    tag_image(client, image_id, stage.tag)  # only a finished image gets the stage's tag
    seconds = time.monotonic() - t0
    reporter.step(name, "built", f"{seconds:5.1f} s  {stage.tag}")
    return StageResult(name, stage.tag, image_id, "built", seconds)


def _docker_build(client: docker.DockerClient, stage: PlannedStage, network: str, wheel_url: str,
                  reporter: Reporter, verbose: bool) -> str:
    name = stage.spec.name
    tail: deque[str] = deque(maxlen=25)
    stream = client.api.build(
        fileobj=context_tar({"Dockerfile": stage.dockerfile}), custom_context=True, rm=True, forcerm=True,
        pull=False, decode=True, network_mode=network, buildargs={"SGLBUILD_WHEELHOUSE": wheel_url},
        labels={LABEL_MANAGED: "true"},
    )
    image_id = ""
    try:
        for chunk in stream:
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        tail.append(line)
                        if verbose:
                            reporter.info(f"    [dim]{line}[/dim]")
            if "error" in chunk:
                message = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                if not verbose:
                    for line in tail:
                        reporter.info(f"    [dim]{line}[/dim]")
                if "no space left on device" in message.lower():
                    raise DiskFull(f"stage {name}: disk full during the build", "free space (docker image prune) and build again")
                code = re.search(r"returned a non-zero code: (\d+)", message)
                errors = [ln.strip() for ln in tail if re.search(r"\berror\b", ln, re.I)]
                why = (errors or [message.strip().splitlines()[-1]])[-1][:300]
                step = f"a step exited with code {code.group(1)}: " if code else ""
                raise BuildFailed(f"stage {name} failed: {step}{why}", "the step's last lines are above; nothing was tagged")
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    except KeyboardInterrupt:
        raise Interrupted(f"build interrupted during stage {name}; no tag was moved", "run the build again") from None
    except docker.errors.APIError as exc:
        raise EngineError(f"stage {name}: the engine refused the build: {exc.explanation}") from None
    finally:
        getattr(stream, "close", lambda: None)()
    if not image_id:
        raise EngineError(f"stage {name}: the engine reported no image ID")
    return image_id


def _check_disk(client: docker.DockerClient, lock: Lock, wheelhouse: Path, todo: list[PlannedStage]) -> None:
    """Refuse to start a build that cannot fit: installed wheels take about 2.5x their size."""
    stages = {s.spec.name for s in todo}
    need = sum((wheelhouse / w.filename).stat().st_size for w in lock.wheels if w.stage in stages)
    need = int(need * 2.5) + (512 << 20)
    root = client.info().get("DockerRootDir", "/var/lib/docker")
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return  # a remote engine: its disk is not ours to measure
    if free < need:
        raise DiskFull(f"{free / 2**30:.1f} GiB free under {root}, the build needs about {need / 2**30:.1f} GiB",
                       "free space (remove old sglbuild/* stage images) and build again")


def smoke_test(client: docker.DockerClient, image_id: str, target: Target, flags: list[str],
               reporter: Reporter) -> list[dict]:
    """Run the target's smoke commands in the image, without network; raise on the first failure.

    ``SGLBUILD_FLAGS`` (JSON) gives a command the image's default server flags to check.
    """
    results = []
    for command in target.smoke:
        t0 = time.monotonic()
        code, out = run_in_image(client, image_id, [command], entrypoint=["/bin/sh", "-c"],
                                 environment={"SGLBUILD_FLAGS": json.dumps(flags)})
        seconds = time.monotonic() - t0
        results.append({"command": command, "exit_code": code, "output": out.strip()[-2000:], "seconds": round(seconds, 2)})
        if code != 0:
            last = (out.strip().splitlines() or ["(no output)"])[-1][:300]
            reporter.step("smoke", "failed", command)
            raise SmokeTestFailed(f"smoke test failed (exit {code}): {command!r}: {last}",
                                  f"the image keeps only its immutable tag; {target.human_tag} was not moved")
        reporter.step("smoke", "passed", f"{seconds:5.1f} s  {out.strip().splitlines()[-1][:100] if out.strip() else command}")
    return results
