"""``sglbuild build --check-reproducible``: two builds from scratch, compared layer by layer.

Neither build reuses a base, a stage or the engine's build cache; each gets its own
namespace (``sglbuild-repro/TARGET-a`` and ``-b``), removed afterwards. Identical means
the same image ID (and so the same config and the same layer diff IDs).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import docker
import docker.errors

from .build import build
from .layers import diff_images
from .lock import Lock
from .profile import Profile, Target
from .ui import Reporter


def check_reproducible(profile: Profile, target: Target, lock: Lock, wheelhouse: Path, reporter: Reporter,
                       client: docker.DockerClient) -> dict:
    repos = [f"sglbuild-repro/{target.name}-{x}" for x in ("a", "b")]
    runs = []
    try:
        for repo in repos:
            reporter.info(f"from-scratch build into {repo}")
            runs.append(build(profile, target, lock, wheelhouse, reporter, client, fresh=True, publish=False, repo=repo))
        a, b = runs
        diffs = diff_images(client, a.image_id, b.image_id)
        return {
            "identical": a.image_id == b.image_id,
            "image_ids": [a.image_id, b.image_id],
            "seconds": [round(a.seconds, 1), round(b.seconds, 1)],
            "layers": [{**asdict(d), "identical": d.identical} for d in diffs],
        }
    finally:
        remove_tags(client, repos)


def remove_tags(client: docker.DockerClient, repos: list[str]) -> None:
    """Untag what the check made; children first (a stage image is its successor's parent)."""
    tags = [t for image in client.images.list() for t in image.tags if t.startswith(tuple(r + ":" for r in repos))]
    for _ in range(10):
        left = []
        for tag in tags:
            try:
                client.images.remove(tag)
            except docker.errors.APIError:
                left.append(tag)
        if not left or len(left) == len(tags):
            return
        tags = left


def repro_text(report: dict) -> str:
    a, b = report["image_ids"]
    lines = [f"build A: {a}  ({report['seconds'][0]} s)", f"build B: {b}  ({report['seconds'][1]} s)"]
    for layer in report["layers"]:
        state = "identical" if layer["identical"] else "DIFFERS"
        lines.append(f"  layer {layer['index']} ({layer['stage']}): {state} {(layer['a'] or '')[:19]}")
        for f in layer["files"][:50]:
            lines.append(f"      {f['path']}: {', '.join(f['how'])}")
    lines.append("REPRODUCIBLE: both builds gave the same image ID" if report["identical"]
                 else "NOT REPRODUCIBLE: the files above differ between two builds of the same lock")
    return "\n".join(lines) + "\n"
