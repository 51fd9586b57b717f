"""Step 4, render: the Dockerfile, from ``templates/Dockerfile.j2``, the profile and the lock.

The same template renders the whole multi-stage file (for people to read and diff)
and each stage on its own (what the build runs, ``FROM`` the parent stage's tag), so
what is built is exactly what ``sglbuild render`` shows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import jinja2

from . import __version__
from .errors import InputError
from .flags import server_flags
from .lock import Lock, Wheel
from .profile import Target
from .sbom import sbom_json

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: str  # "system" | "wheels" | "final"
    parent: str  # image reference or the previous stage's name
    wheels: tuple[Wheel, ...] = field(default=())


def stage_specs(target: Target, lock: Lock, base_ref: str) -> list[StageSpec]:
    """The build's stages in order: system, one per [[stage]], final."""
    specs = [StageSpec("system", "system", base_ref)]
    for stage in target.stages:
        specs.append(StageSpec(stage.name, "wheels", specs[-1].name, tuple(lock.stage_wheels(stage.name))))
    specs.append(StageSpec("final", "final", specs[-1].name))
    return specs


def labels(target: Target, lock: Lock, revision: str) -> list[tuple[str, str]]:
    created = datetime.fromtimestamp(target.base.source_date_epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    sglang = lock.wheel("sglang")
    return sorted({
        "org.opencontainers.image.title": target.human_tag,
        "org.opencontainers.image.description": target.description,
        "org.opencontainers.image.version": f"{target.tag}-{lock.digest[:12]}",
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": target.source,
        "io.sglbuild.version": __version__,
        "io.sglbuild.target": target.name,
        "io.sglbuild.lock-digest": f"sha256:{lock.digest}",
        "io.sglbuild.gpu-arch": target.gpu_arch,
        "io.sglbuild.sglang-version": sglang.version if sglang else "",
        "io.sglbuild.serve-flags": json.dumps(serve_flags(target, lock)),
        "io.sglbuild.require-native": json.dumps(list(target.require_native)),
    }.items())


def serve_flags(target: Target, lock: Lock) -> list[str]:
    """The default server flags, spelled for the locked SGLang ([] without [serve])."""
    if target.serve is None:
        return []
    sglang = lock.wheel("sglang")
    if sglang is None:
        raise InputError(f"target {target.name!r} has [serve] settings but its lock has no sglang")
    return server_flags(target.serve, sglang.version)


def _environment(template_dir: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(target: Target, lock: Lock, stages: list[StageSpec], revision: str, template_dir: Path = TEMPLATES,
           *, reproducible: bool = True) -> str:
    """The Dockerfile; ``reproducible`` False leaves out the steps that pin times and install order."""
    try:
        template = _environment(template_dir).get_template("Dockerfile.j2")
        text = template.render(
            sglbuild_version=__version__,
            target=target,
            stages=stages,
            uv=next((w for w in lock.stage_wheels("tools") if w.name == "uv"), None),
            env=list(target.env),
            server_flags=serve_flags(target, lock),
            labels=labels(target, lock, revision),
            lock_sha256=hashlib.sha256(lock.to_json().encode()).hexdigest(),
            sbom_sha256=hashlib.sha256(sbom_json(target, lock).encode()).hexdigest(),
            post_install=list(target.post_install),
            reproducible=reproducible,
        )
    except jinja2.TemplateNotFound as exc:
        raise InputError(f"template {exc.name} not found in {template_dir}") from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"{template_dir / 'Dockerfile.j2'}: {exc.message}", "the template uses a value the renderer does not give") from None
    return text.rstrip("\n") + "\n"
