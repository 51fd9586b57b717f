"""A registry as the stage cache shared by machines: ``sglbuild build --cache REPO``.

Stage images are content-keyed (:mod:`builder.assemble.plan`), but an engine only knows its own: a bare CI
runner would build everything. With a cache, a stage the engine lacks is looked up as
``REPO:<stage>-<key>``: if the registry has it, it is pulled by digest and used only if its
``io.sglbuild.stage-key`` label names that key (a base: only if its Debian packages are the
lock's); otherwise the stage is built here and pushed, for the next machine. The cache only ever
saves work: a registry that does not answer, or an entry that does not match, is said in one
line and the stage is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..contracts import LABEL_STAGE_KEY
from ..errors import SglbuildError
from ..oci import check_repo
from ..ui import Reporter

if TYPE_CHECKING:
    from ..engine import Engine


@dataclass
class StageCache:
    engine: Engine
    repo: str
    reporter: Reporter

    def __post_init__(self) -> None:
        check_repo(self.repo)

    def ref(self, name: str, key: str) -> str:
        return f"{self.repo}:{name}-{key[:16]}"

    def fetch(self, name: str, key: str, local_tag: str, *, check_label: bool = True) -> str | None:
        """Pull the cached image of stage NAME (key KEY), tag it LOCAL_TAG; its ID, or None on a miss."""
        ref = self.ref(name, key)
        try:
            digest = self.engine.images.registry_digest(ref)
            if digest is None:
                return None
            repo = ref.rpartition(":")[0]
            image = self.engine.images.pull(repo, digest)
        except SglbuildError as exc:
            self.reporter.step(name, "no cache", f"{ref}: {exc}")
            return None
        if check_label and (image.labels or {}).get(LABEL_STAGE_KEY) != key:
            self.reporter.step(name, "refused", f"{repo}@{digest[:19]} is labelled for another key; building it here")
            return None
        self.engine.images.tag(image.id, local_tag)
        self.reporter.step(name, "pulled", f"{repo}@{digest[:19]}")
        return image.id

    def offer(self, name: str, key: str, image_id: str) -> None:
        """A stage this engine had already: pushed only if the registry lacks it (a warm engine seeds the cache)."""
        try:
            if self.engine.images.registry_digest(self.ref(name, key)) is not None:
                return
        except SglbuildError as exc:
            self.reporter.step(name, "not cached", f"{self.ref(name, key)}: {exc}")
            return
        self.store(name, key, image_id)

    def store(self, name: str, key: str, image_id: str) -> None:
        """Push the image of stage NAME (key KEY) built here, for the next machine."""
        ref = self.ref(name, key)
        repo, _, tag = ref.rpartition(":")
        try:
            self.engine.images.tag(image_id, ref)
            digest = self.engine.images.push(repo, tag)
        except SglbuildError as exc:
            self.reporter.step(name, "not cached", f"{ref}: {exc}")
            return
        self.reporter.step(name, "pushed", f"{repo}@{digest[:19]}")
