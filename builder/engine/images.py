"""``docker image ...``: find, tag, remove, import, load, export, pull and push images."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import docker.errors

from ..contracts import LABEL_MANAGED
from ..errors import DiskFull, EngineError, ImageNotFound, NetworkError
from ..state import alone
from .guard import guard
from .archives import canonical, digest_of, legacy_archive, oci_layout_archive
from .records import ImageRecord

if TYPE_CHECKING:
    from . import Engine

_CHUNK = 1 << 20


def split_ref(ref: str) -> tuple[str, str]:
    """REPO:TAG -> (REPO, TAG); a registry port is not a tag."""
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        return ref, "latest"
    return repo, tag


class Images:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.api = engine, engine.client.api

    def find(self, ref: str) -> ImageRecord | None:
        with guard(f"a lookup of image {ref}"):
            try:
                return ImageRecord.from_attrs(self.api.inspect_image(ref))
            except docker.errors.ImageNotFound:
                return None

    def get(self, ref: str) -> ImageRecord:
        image = self.find(ref)
        if image is None:
            raise ImageNotFound(f"no image {ref!r} on this engine", "build it, or pull it by digest")
        return image

    def tag(self, image_id: str, ref: str, *, drop_replaced: bool = False, previous: ImageRecord | None = None) -> None:
        """Point REF at IMAGE_ID. ``drop_replaced``: remove the image REF pointed at before (PREVIOUS, if a
        builder already moved REF) if that left it untagged and sglbuild made it (a --no-cache rebuild
        would leave it dangling)."""
        previous = previous or (self.find(ref) if drop_replaced else None)
        repo, tag = split_ref(ref)
        with guard(f"tagging {image_id[:19]} as {ref}"):
            self.api.tag(image_id, repo, tag, force=True)
        if previous is None or previous.id == image_id:
            return
        now = self.find(previous.id)
        # Another build of the same stage may be about to use it as a parent: then gc removes it, once no build runs.
        if now is not None and not now.tags and now.labels.get(LABEL_MANAGED) and alone(self.engine.where):
            # Refused while a child image still uses it; the last stage's removal takes its untagged parents.
            self.untag_or_remove(previous.id)

    def untag_or_remove(self, ref: str) -> bool:
        """Remove a tag (and the image, if nothing else names it); False if the engine keeps it (a child uses it)."""
        with guard(f"removing {ref}"):
            try:
                self.api.remove_image(ref)
                return True
            except docker.errors.ImageNotFound:
                return True
            except docker.errors.APIError:
                return False

    def remove(self, ref: str, *, force: bool = False) -> None:
        with guard(f"removing image {ref}"):
            try:
                self.api.remove_image(ref, force=force)
            except docker.errors.ImageNotFound:
                pass

    def list(self, *, label: str | None = None, dangling: bool | None = None) -> list[ImageRecord]:
        filters: dict[str, Any] = {}
        if label:
            filters["label"] = label
        if dangling is not None:
            filters["dangling"] = dangling
        with guard("a list of images"):
            found = [self.find(summary["Id"]) for summary in self.api.images(filters=filters)]
        return [image for image in found if image is not None]

    def tags_under(self, prefixes: tuple[str, ...]) -> list[str]:
        """Every tag on this engine that starts with one of PREFIXES."""
        with guard("a list of images"):
            return sorted(t for summary in self.api.images() for t in summary.get("RepoTags") or () if t.startswith(prefixes))

    def import_tarball(self, tarball: Path, changes: list[str], platform: str | None = None) -> str:
        """``docker import``: a root filesystem tarball as a one-layer image; returns its ID. An import the engine
        refuses leaves no image of sglbuild's behind: containerd's store keeps the record of an image whose layer it
        could not unpack, untagged, under the labels CHANGES gave it."""
        before = {image.id for image in self.list(label=LABEL_MANAGED, dangling=True)}
        try:
            return self._import(tarball, changes, platform)
        except (EngineError, DiskFull):  # refused, or refused for want of space: the engine still answers
            for image in self.list(label=LABEL_MANAGED, dangling=True):
                if image.id not in before:
                    self.remove(image.id)
            raise

    def _import(self, tarball: Path, changes: list[str], platform: str | None) -> str:
        with guard(f"the import of {tarball.name}"):
            params = {"platform": platform} if platform else {}
            out = self.api.import_image_from_file(str(tarball), changes=changes, **params)
        last = out.strip().splitlines()[-1] if isinstance(out, str) else str(out)
        try:
            status = json.loads(last).get("status", "")
        except ValueError:
            status = ""
        if not status.startswith("sha256:"):
            raise EngineError(f"the engine refused the import of {tarball.name}: {last[:200]}")
        return status

    def load(self, archive: bytes, what: str) -> None:
        """``docker load`` of an in-memory archive."""
        with guard(f"loading {what}"):
            for chunk in self.api.load_image(archive):
                if isinstance(chunk, dict) and "error" in chunk:
                    raise EngineError(f"the engine refused {what}: {chunk['error']}")

    def load_config(self, config: dict[str, Any], *, source: str, name: str | None, mtime: int) -> str:
        """Re-issue SOURCE (an image here) with CONFIG, whose layers are SOURCE's, as NAME (None: untagged,
        the legacy store only); returns the new image's ID. No layer is read or written."""
        raw = canonical(config)
        if not self.engine.containerd_store:
            if name is None and self.find(digest_of(raw)) is not None:
                return digest_of(raw)
            self.load(legacy_archive(raw, name, mtime), "a re-issued image config")
            return digest_of(raw)
        if name is None:
            raise EngineError("containerd's image store takes a re-issued config only under a name")
        from .export import oci_manifest

        self.load(oci_layout_archive(raw, oci_manifest(self.engine, source), name, mtime), "a re-issued image config")
        return self.get(name).id

    def export(self, image: str) -> Iterator[bytes]:
        """``docker save`` of one image, as a stream of chunks (never written to disk)."""
        with guard(f"the export of {image}"):
            yield from self.api.get_image(image, chunk_size=_CHUNK)

    def history(self, image: str) -> list[dict[str, Any]]:
        with guard(f"the history of {image}"):
            return self.api.history(image)

    def registry_digest(self, ref: str) -> str | None:
        """The digest REPO:TAG names in its registry, asked through the engine; None if the registry has no such tag."""
        with guard(f"a look-up of {ref} in its registry"):
            try:
                return self.engine.client.images.get_registry_data(ref).id
            except docker.errors.NotFound:
                return None
            except docker.errors.APIError as exc:
                if exc.status_code in (401, 403, 404) or "manifest unknown" in str(exc.explanation or "").lower():
                    return None
                raise NetworkError(f"the registry of {ref} did not answer: {' '.join(str(exc.explanation or exc).split())}") from None

    def pull(self, repo: str, tag: str, platform: str | None = None) -> ImageRecord:
        """Pull REPO:TAG or REPO@sha256:... (for PLATFORM, from an index); the image pulled."""
        with guard(f"the pull of {repo}:{tag}"):
            try:
                for chunk in self.api.pull(repo, tag=tag, stream=True, decode=True, platform=platform):
                    if "error" in chunk:
                        raise NetworkError(f"cannot pull {repo}@{tag}: {chunk['error']}")
            except docker.errors.APIError as exc:
                raise NetworkError(f"cannot pull {repo}@{tag}: {exc.explanation}") from None
        sep = "@" if tag.startswith("sha256:") else ":"
        return self.get(f"{repo}{sep}{tag}")

    def get_or_pull(self, ref: str, platform: str | None = None) -> ImageRecord:
        """REF here; a REPO@sha256:... that is not here is pulled, for PLATFORM when REF names an index (only that image)."""
        found = self.find(ref)
        if found is not None and (platform is None or found.platform == platform):
            return found
        if "@sha256:" not in ref:
            if found is not None:
                raise ImageNotFound(f"{ref} here is {found.platform}, not {platform}", "verify it by digest: REPO@sha256:...")
            return self.get(ref)
        repo, _, digest = ref.partition("@")
        return self.pull(repo, digest, platform)

    def push(self, repo: str, tag: str) -> str:
        """Push REPO:TAG; returns the digest the registry gave it."""
        digest = ""
        with guard(f"the push of {repo}:{tag}"):
            try:
                for chunk in self.api.push(repo, tag=tag, stream=True, decode=True):
                    if "error" in chunk:
                        raise NetworkError(f"push of {repo}:{tag} failed: {chunk['error']}", "check the registry and your login")
                    # The legacy store says it in "aux"; containerd's store only in the last status line.
                    said = re.search(r"digest: (sha256:[0-9a-f]{64})", chunk.get("status") or "")
                    digest = (chunk.get("aux") or {}).get("Digest") or (said.group(1) if said else digest)
            except docker.errors.APIError as exc:
                raise NetworkError(f"push of {repo}:{tag} failed: {exc.explanation}") from None
        if not digest:
            raise NetworkError(f"push of {repo}:{tag} reported no digest")
        return digest

    def archive(self, image: str, path: str) -> bytes | None:
        """The tar of PATH inside IMAGE (``docker cp``), or None when the image has no such path."""
        containers = self.engine.containers
        container = containers.create(image, ["true"])
        try:
            return containers.get_archive(container.id, path)
        finally:
            containers.remove(container.id)


def tar_member_bytes(archive: bytes, *, below: bool = False) -> dict[str, bytes]:
    """{file name: contents} of the files in a ``docker cp`` archive; BELOW: keyed by their path below the copied
    directory (NAME/NAME.so) instead."""
    import io
    import tarfile

    out = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                key = member.name.split("/", 1)[1] if below else member.name.rsplit("/", 1)[-1]
                out[key] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return out
