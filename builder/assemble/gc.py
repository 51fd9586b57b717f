"""``sglbuild gc``: remove what interrupted runs left behind, and nothing anyone else made.

A build killed with ``kill -9`` cannot clean up: it may leave untagged stage images (the
classic builder's intermediate containers and images), stopped probe or build containers,
the build network, its served-files directories beside the wheelhouse and BuildKit's
Dockerfile directories in the temporary directory, and tags in sglbuild's scratch
repositories (``sglbuild-repro/``, ``sglbuild-bench/``). Everything here is found by
sglbuild's own label or names; running containers (a ``serve``) and tagged images stay. A served image's compile-cache
volume goes once no image on the engine has the content it was made for (another image's modules never fit it).

Builds hold a shared lock while they run, one per engine (:func:`builder.state.engine_lock`); gc takes it
exclusively, so it never removes a running build's work, and a killed build's lock is released by the kernel.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..contracts import LABEL_CACHE_CONTENT, LABEL_MANAGED, STAGE_REPO, TEST_CACHE_REPO
from ..state import base_cache_dir, engine_lock, scratch_leftovers

if TYPE_CHECKING:
    from ..engine import Engine

SCRATCH_REPOS = ("sglbuild-repro/", "sglbuild-bench/")


@dataclass
class Collected:
    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)  # compile caches of images no longer on the engine
    paths: list[str] = field(default_factory=list)
    bytes: int = 0
    kept_running: list[str] = field(default_factory=list)
    kept_volumes: list[str] = field(default_factory=list)  # orphaned, but a container still mounts them
    kept_cache: list[str] = field(default_factory=list)  # the test suite's cache: tagged, kept on purpose
    base_cache: list[str] = field(default_factory=list)  # root filesystems in $SGLBUILD_BASE_CACHE (kept)
    base_cache_bytes: int = 0


def collect(engine: Engine, wheelhouse: Path, *, dry_run: bool = False) -> Collected:
    out = Collected()
    with engine_lock(engine.where, exclusive=True):
        for c in engine.containers.list_managed():
            if c.status == "running":
                out.kept_running.append(c.name)
                continue
            out.containers.append(c.name)
            if not dry_run:
                engine.containers.remove(c.id)
        building = [t for t in engine.images.tags_under((STAGE_REPO + ":",)) if ".build-" in t.rpartition(":")[2]]
        for tag in [*engine.images.tags_under(SCRATCH_REPOS), *building]:  # a BuildKit export a killed build never renamed
            out.images.append(tag)
            if not dry_run:
                engine.images.remove(tag, force=True)
        for image in engine.images.list(label=LABEL_MANAGED, dangling=True):
            out.images.append(image.id[:19])
            out.bytes += image.size
            if not dry_run:
                engine.images.remove(image.id, force=True)
        for net in engine.networks.list_managed():
            if net.containers:
                continue
            out.networks.append(net.name)
            if not dry_run:
                engine.networks.remove(net.name)
        live = {image.content_key for image in engine.images.list()}
        for volume in engine.volumes.list_managed():
            if volume.labels.get(LABEL_CACHE_CONTENT) in live:
                continue
            if dry_run or engine.volumes.remove(volume.name):
                out.volumes.append(volume.name)
                out.bytes += volume.size or 0
            else:
                out.kept_volumes.append(volume.name)
        for path in scratch_leftovers(wheelhouse):
            out.paths.append(str(path))
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        out.kept_cache = engine.images.tags_under((TEST_CACHE_REPO + "/",))
        where = base_cache_dir()
        for tarball in sorted(where.glob("*.tar")) if where is not None and where.is_dir() else []:
            out.base_cache.append(str(tarball))
            out.base_cache_bytes += tarball.stat().st_size
    return out


def text(c: Collected, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {len(c.containers)} containers, {len(c.images)} images, {len(c.volumes)} cache volumes "
             f"({c.bytes / 1e9:.2f} GB), {len(c.networks)} networks, {len(c.paths)} directories"]
    lines += [f"  {kind:<10} {name}" for kind, names in (("container", c.containers), ("image", c.images),
                                                          ("volume", c.volumes), ("network", c.networks), ("path", c.paths))
              for name in names]
    if c.kept_running:
        lines.append(f"  kept running: {', '.join(c.kept_running)} (stop them with docker rm -f)")
    if c.kept_volumes:
        lines.append(f"  kept in use: {', '.join(c.kept_volumes)} (a container still mounts them)")
    if c.kept_cache:
        lines.append(f"  kept: the test suite's cache, {len(c.kept_cache)} images ('make clean-test-cache' removes them)")
        lines += [f"    {tag}" for tag in c.kept_cache]
    if c.base_cache:
        lines.append(f"  kept: {len(c.base_cache)} bootstrapped bases in $SGLBUILD_BASE_CACHE ({c.base_cache_bytes / 1e9:.2f} GB; "
                     "delete the files to drop them)")
        lines += [f"    {path}" for path in c.base_cache]
    return "\n".join(lines) + "\n"
