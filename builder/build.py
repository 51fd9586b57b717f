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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import docker
import docker.errors

from .base import ensure_base
from .engine import LABEL_MANAGED, build_network, context_tar, find_image, git_revision, run_in_image, tag_image
from .errors import BuildFailed, DiskFull, EngineError, Interrupted, SmokeTestFailed
from .lock import Lock
from .profile import Profile, Target
from .normalize import normalize
from .registry import record_verified
from .render import StageSpec, render, serve_flags, stage_specs
from .sbom import sbom_json
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
    layers: list[str] = field(default_factory=list)  # diff IDs, base first
    sbom: str = ""
    stages: list[StageResult] = field(default_factory=list)
    smoke: list[dict] = field(default_factory=list)
    verify: dict = field(default_factory=dict)
    base_seconds: float = 0.0
    normalize_seconds: float = 0.0
    seconds: float = 0.0


# Stage images are content-addressed, so targets that share a stage share its image.
STAGE_REPO = "sglbuild/stage"


def plan(target: Target, lock: Lock, base: str, revision: str, repo: str | None = None,
         reproducible: bool = True) -> list[PlannedStage]:
    stages: list[PlannedStage] = []
    parent = base
    for spec in stage_specs(target, lock, base):
        single = replace(spec, parent=parent)
        text = render(target, lock, [single], revision, reproducible=reproducible)
        key = hashlib.sha256(text.encode()).hexdigest()
        stages.append(PlannedStage(single, text, key, f"{repo or STAGE_REPO}:{spec.name}-{key[:16]}"))
        parent = stages[-1].tag
    return stages


def build(profile: Profile, target: Target, lock: Lock, wheelhouse: Path, reporter: Reporter,
          client: docker.DockerClient, verbose: bool = False, *, fresh: bool = False, publish: bool = True,
          repo: str | None = None, reproducible: bool = True) -> BuildResult:
    """base -> stages -> normalize -> (publish: smoke + verify -> tags).

    ``fresh`` ignores every existing stage, base and engine cache (a from-scratch build);
    ``publish`` False builds without moving any tag outside ``repo``. ``reproducible``
    False is the benchmark's plain build: no pinned times, no clashing-files fix-up,
    no normalized config; such an image is never published.
    """
    if not reproducible and (publish or not repo):
        raise ValueError("a plain (non-reproducible) build needs its own repo and is never published")
    started = time.monotonic()
    result = BuildResult(target=target.name, lock_digest=f"sha256:{lock.digest}")
    verify_wheelhouse(lock, wheelhouse)

    t0 = time.monotonic()
    result.base, built = ensure_base(client, target, lock, ref=f"{repo}:base" if repo else None, fresh=fresh)
    result.base_seconds = time.monotonic() - t0
    reporter.step("base", "built" if built else "reused", f"{result.base_seconds:5.1f} s  {result.base}")

    stages = plan(target, lock, result.base, git_revision(profile.root), repo, reproducible)
    todo = stages if fresh else [s for s in stages if find_image(client, s.tag) is None]
    if todo:
        _check_disk(client, lock, wheelhouse, todo)
        network, gateway = build_network(client)
        extra = {"sglbuild/lock.json": lock.to_json().encode(), "sglbuild/sbom.cdx.json": sbom_json(target, lock).encode()}
        with WheelServer(wheelhouse, lock.wheels, gateway, extra) as server:
            for stage in stages:
                result.stages.append(_stage(client, stage, stage in todo, network, server.url, reporter, verbose, fresh))
    else:
        for stage in stages:
            result.stages.append(_stage(client, stage, False, "", "", reporter, verbose, fresh))

    t0 = time.monotonic()
    result.image_id = result.stages[-1].image_id
    if reproducible:
        result.image_id = normalize(client, result.image_id, _layer_stages(client, result), target.base.source_date_epoch)
    image = client.images.get(result.image_id)
    result.size, result.layers = int(image.attrs.get("Size", 0)), list(image.attrs["RootFS"]["Layers"])
    result.normalize_seconds = time.monotonic() - t0
    reporter.step("normalize", "done" if reproducible else "skipped",
                  f"{result.normalize_seconds:5.1f} s  {result.image_id[:19]} ({len(result.layers)} layers)")
    result.immutable_tag = f"{repo}:final" if repo else f"{target.human_tag}-{stages[-1].key[:12]}"
    tag_image(client, image.id, result.immutable_tag)
    if publish:
        _publish(client, image.id, target, lock, result, reporter)
        sbom = profile.root / "out" / f"{target.name}.cdx.json"
        sbom.parent.mkdir(exist_ok=True)
        sbom.write_text(sbom_json(target, lock))
        result.sbom = str(sbom)
    result.seconds = time.monotonic() - started
    return result


def _layer_stages(client: docker.DockerClient, result: BuildResult) -> list[str]:
    """Which stage made each layer of the final image (from each stage image's layer count)."""
    names: list[str] = []
    for name, image_id in [("base", result.base), *((s.name, s.image_id) for s in result.stages)]:
        count = len(client.images.get(image_id).attrs["RootFS"]["Layers"])
        names += [name] * (count - len(names))
    return names


def _publish(client: docker.DockerClient, image_id: str, target: Target, lock: Lock, result: BuildResult,
             reporter: Reporter) -> None:
    current = find_image(client, target.human_tag)
    if current is not None and current.id == image_id:
        result.tag = target.human_tag  # already smoke-tested and verified when the tag was moved here
        reporter.step("smoke", "reused", f"{target.human_tag} already is this image")
    else:
        # Smoke tests and verify's static checks read the same image: run them side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            smoke = pool.submit(smoke_test, client, image_id, target, serve_flags(target, lock), reporter)
            checks = pool.submit(_verify, client, image_id, target, lock, reporter)
            result.smoke, result.verify = smoke.result(), checks.result()
        tag_image(client, image_id, target.human_tag)
        result.tag = target.human_tag
    reporter.step("tag", "tagged", f"{target.human_tag}  {result.immutable_tag}")


def _stage(client: docker.DockerClient, stage: PlannedStage, needed: bool, network: str, wheel_url: str,
           reporter: Reporter, verbose: bool, nocache: bool) -> StageResult:
    name = stage.spec.name
    t0 = time.monotonic()
    if not needed:
        image = client.images.get(stage.tag)
        reporter.step(name, "reused", f"  0.0 s  {stage.tag}")
        return StageResult(name, stage.tag, image.id, "reused", 0.0)
    reporter.step(name, "building", stage.tag)
    image_id = _docker_build(client, stage, network, wheel_url, reporter, verbose, nocache)
    tag_image(client, image_id, stage.tag, drop_replaced=True)  # only a finished image gets the stage's tag
    seconds = time.monotonic() - t0
    reporter.step(name, "built", f"{seconds:5.1f} s  {stage.tag}")
    return StageResult(name, stage.tag, image_id, "built", seconds)


def _docker_build(client: docker.DockerClient, stage: PlannedStage, network: str, wheel_url: str,
                  reporter: Reporter, verbose: bool, nocache: bool) -> str:
    name = stage.spec.name
    tail: deque[str] = deque(maxlen=25)
    stream = client.api.build(
        fileobj=context_tar({"Dockerfile": stage.dockerfile}), custom_context=True, rm=True, forcerm=True, nocache=nocache,
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


def _verify(client: docker.DockerClient, image_id: str, target: Target, lock: Lock, reporter: Reporter) -> dict:
    """verify's static checks; the human tag moves only if they pass."""
    from .verify import verify

    report = verify(client, image_id, gpu="off", repo_lock=lock)
    for c in report.checks:
        if c.status != "skip":
            reporter.step("verify", "passed" if c.status == "pass" else "failed", f"{c.name}: {c.detail[:120]}")
    failed = [c for c in report.checks if c.status == "fail"]
    if failed:
        raise SmokeTestFailed(f"verify failed: {failed[0].name}: {failed[0].detail[:300]}",
                              f"the image keeps only its immutable tag; {target.human_tag} was not moved")
    record_verified(image_id, gpu_checked=False)
    return report.to_dict()


def smoke_test(client: docker.DockerClient, image_id: str, target: Target, flags: list[str],
               reporter: Reporter) -> list[dict]:
    """Run the target's smoke commands in the image (in parallel, without network).

    ``SGLBUILD_FLAGS`` (JSON) gives a command the image's default server flags to check.
    Raises on the first failure, in the profile's order.
    """

    def one(command: str) -> dict:
        t0 = time.monotonic()
        code, out = run_in_image(client, image_id, [command], entrypoint=["/bin/sh", "-c"],
                                 environment={"SGLBUILD_FLAGS": json.dumps(flags)})
        return {"command": command, "exit_code": code, "output": out.strip()[-2000:], "seconds": round(time.monotonic() - t0, 2)}

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, target.smoke))
    for r in results:
        lines = r["output"].splitlines() or ["(no output)"]
        if r["exit_code"] != 0:
            reporter.step("smoke", "failed", r["command"])
            raise SmokeTestFailed(f"smoke test failed (exit {r['exit_code']}): {r['command']!r}: {lines[-1][:300]}",
                                  f"the image keeps only its immutable tag; {target.human_tag} was not moved")
        reporter.step("smoke", "passed", f"{r['seconds']:5.1f} s  {lines[-1][:100]}")
    return results
