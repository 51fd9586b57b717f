"""The suite's cache: what takes long to make and depends only on its inputs, kept between runs and keyed by them.

On disk, under ``$SGLBUILD_TEST_CACHE`` (default ``~/.cache/sglbuild-tests``):
- ``nvcc/``: GPU binaries nvcc and binutils made for the fixtures, keyed by the tools' versions, the source and the flags
  (nvcc's output differs from run to run, so a new one would also change every stage key that installs it);
- ``bases/``: bootstrapped root filesystems (sglbuild's own ``$SGLBUILD_BASE_CACHE``), keyed by the base's key: the arm64
  one takes minutes under emulation, and a second engine imports what the first bootstrapped;
- ``uv/``, ``debs/``: files from PyPI and the Debian mirror, checked by their sha256 wherever they are used;
- ``cuobjdump-answers.json``: cuobjdump's listing of each file of the wheelhouse (the authority's answer for the same bytes).

On each engine, the test bases and the small targets' stage images the suite built (never a final stage, a human tag or
anything a test made on purpose) stay after the session, each with a second tag in ``sglbuild-test-cache/`` that marks
it as the suite's. A run whose inputs did not change builds none of them; a changed input makes another key, so only
what it keys is built. An entry no session used for a week is removed at the end of a session. ``sglbuild gc --dry-run``
lists them; ``make clean-test-cache`` (``python tests/testcache.py clean``) removes them and the files above.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from builder.contracts import TEST_CACHE_REPO  # noqa: E402
CACHE = Path(os.environ.get("SGLBUILD_TEST_CACHE", Path.home() / ".cache" / "sglbuild-tests"))
CACHE_REPO = TEST_CACHE_REPO  # the mirror tag of each kept image
KEPT = ("sglbuild/base:", "sglbuild/stage:")  # what may be kept: bases and stages ...
NEVER = ("sglbuild/stage:final-",)  # ... but not final stages (they carry the target's lock: another key each session)
UNUSED_FOR = 7 * 86400


def keyed(kind: str, *inputs: object) -> Path:
    """CACHE/KIND/DIGEST: a directory named by INPUTS (the same in every process: sets sorted, mappings by key)."""
    digest = hashlib.sha256(json.dumps(_canonical(list(inputs)), sort_keys=True).encode()).hexdigest()[:24]
    return CACHE / kind / digest


def _canonical(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(str(_canonical(v)) for v in value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def tool_version(argv: list[str]) -> str:
    return subprocess.run([*argv, "--version"], capture_output=True, text=True).stdout.strip()


def made_once(kind: str, inputs: list[object], make: Callable[[Path], Path]) -> bytes:
    """The bytes of the file MAKE(directory) writes for INPUTS: made on the first run, read back on every later one."""
    where = kept_dir(kind, inputs, lambda d: (d / "made").write_text(str(make(d).relative_to(d))))
    return (where / (where / "made").read_text()).read_bytes()


def kept_dir(kind: str, inputs: list[object], make: Callable[[Path], object]) -> Path:
    """The directory MAKE(directory) fills for INPUTS: made whole on the first run (a killed run leaves nothing that
    counts), then reused; made once when two threads or processes ask at the same time."""
    where = keyed(kind, *inputs)
    with locked(where.name):
        if (where / ".complete").is_file():
            return where
        tmp = where.with_name(f"{where.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        make(tmp)
        (tmp / ".complete").write_text("")
        shutil.rmtree(where, ignore_errors=True)
        os.replace(tmp, where)
    return where


@contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive lock on NAME in the cache, between threads and processes alike (each opens its own description)."""
    (CACHE / "locks").mkdir(parents=True, exist_ok=True)
    with open(CACHE / "locks" / name, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# -- the engine's part -------------------------------------------------------------------------------

def mirror(tag: str) -> str:
    """sglbuild/stage:app-0123 -> sglbuild-test-cache/stage:app-0123."""
    return f"{CACHE_REPO}/{tag.split('/', 1)[1]}"


def cacheable(tag: str) -> bool:
    return tag.startswith(KEPT) and not tag.startswith(NEVER)


def _manifest(client) -> Path:
    where = client.api.base_url
    return CACHE / "engines" / (hashlib.sha256(where.encode()).hexdigest()[:16] + ".json")


def keep(client, made: set[str], used_keys: set[str]) -> list[str]:
    """At the end of a session: tag what the suite made (MADE, tags) as its cache; mark what it used (MADE, and the
    stages whose keys are USED_KEYS, with their bases); drop what no session used for a week. Returns the kept tags."""
    path = _manifest(client)
    try:
        seen: dict[str, float] = json.loads(path.read_text())
    except (OSError, ValueError):
        seen = {}
    now = time.time()
    images = client.images.list()
    tags = {t: image for image in images for t in image.tags}
    used_layers = set()
    for tag, image in tags.items():
        if not cacheable(tag):
            continue
        key16 = tag.rsplit("-", 1)[-1] if tag.startswith("sglbuild/stage:") else None
        if tag in made or (key16 and any(k.startswith(key16) for k in used_keys)):
            if tag not in made and mirror(tag) not in tags:
                continue  # a stage someone else made that the suite reused: not the suite's to keep
            seen[mirror(tag)] = now
            used_layers.add(image.attrs["RootFS"]["Layers"][0])
            if tag in made and mirror(tag) not in tags:
                image.tag(*mirror(tag).split(":", 1))
    for tag, image in tags.items():  # a base is used when a stage used on it starts with its layer
        if tag.startswith("sglbuild/base:") and mirror(tag) in tags and image.attrs["RootFS"]["Layers"][0] in used_layers:
            seen[mirror(tag)] = now
    kept = _drop(client, seen, lambda tag: now - seen.get(tag, now) > UNUSED_FOR)
    for tag in kept:
        seen.setdefault(tag, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(seen, indent=1, sort_keys=True))
    return kept


def _drop(client, seen: dict[str, float], stale: Callable[[str], bool]) -> list[str]:
    """Remove each cache entry that is STALE (or whose sglbuild tag no longer names its image), with its sglbuild tag,
    from the engine and from SEEN; returns the entries kept."""
    import docker.errors

    tags = {t: image for image in client.images.list() for t in image.tags}
    kept = []
    for tag in [t for t in tags if t.startswith(CACHE_REPO + "/")]:
        twin = "sglbuild/" + tag.split("/", 1)[1]
        if stale(tag) or twin not in tags or tags[twin].id != tags[tag].id:
            for ref in (twin, tag):
                try:
                    client.images.remove(ref) if ref in tags else None
                except docker.errors.APIError:
                    pass  # an image something else still builds on stays, untagged by nothing of ours
            seen.pop(tag, None)
        else:
            kept.append(tag)
    return kept


def prune(client, since: float) -> tuple[int, int]:
    """After a whole tier passed (make test, make test-engine): drop what that run, begun at SINCE, did not use. The
    cache then holds what today's suite uses and nothing older. Returns (dropped, kept)."""
    path = _manifest(client)
    try:
        seen: dict[str, float] = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0, 0  # no session recorded its use here: nothing is known stale
    before = len([t for image in client.images.list() for t in image.tags if t.startswith(CACHE_REPO + "/")])
    kept = _drop(client, seen, lambda tag: seen.get(tag, 0) < since)
    path.write_text(json.dumps(seen, indent=1, sort_keys=True))
    return before - len(kept), len(kept)


def cached_tags(client) -> set[str]:
    """The suite's cache on this engine: each mirror tag, and the sglbuild tag beside it."""
    tags = {t for image in client.images.list() for t in image.tags if t.startswith(CACHE_REPO + "/")}
    return tags | {"sglbuild/" + t.split("/", 1)[1] for t in tags}


def kept_images(client) -> set[str]:
    """The IDs of the cache's images and of every image below them (the classic builder keeps each step's image as
    its child's parent): none of them is left behind."""
    images = {image.id: image for image in client.images.list(all=True)}
    tags = cached_tags(client)
    todo = [image.id for image in images.values() if set(image.tags) & tags]
    kept: set[str] = set()
    while todo:
        image_id = todo.pop()
        if image_id in kept or image_id not in images:
            continue
        kept.add(image_id)
        todo.append(images[image_id].attrs.get("Parent") or "")
    return kept


def clean(client) -> int:
    """Remove the suite's cache from this engine and from disk; returns how many images were untagged."""
    import docker.errors

    removed = 0
    for tag in sorted(cached_tags(client), reverse=True):
        try:
            client.images.remove(tag)
            removed += 1
        except docker.errors.APIError:
            pass
    shutil.rmtree(CACHE, ignore_errors=True)
    return removed


def prepare() -> None:
    """Make what the suite keeps on disk, touching no engine (CI runs this beside 'make image'): the uv wheels, the
    nvcc-built fixtures, and both test bases (amd64, and arm64 under emulation: minutes) in sglbuild's base cache."""
    import tempfile

    import support
    import test_fatbin

    os.environ.setdefault("SGLBUILD_BASE_CACHE", str(CACHE / "bases"))
    os.environ.setdefault("SGLBUILD_STATE", tempfile.mkdtemp(prefix="sglbuild-prepare-"))
    test_fatbin.binaries_dir()
    with tempfile.TemporaryDirectory(prefix="sglbuild-prepare-") as tmp:
        _, index = support.prepare_family(Path(tmp), support.uv_wheel_for)
        index.stop()


if __name__ == "__main__":  # python tests/testcache.py clean|prepare|prune SINCE
    if sys.argv[1:2] == ["prune"] and len(sys.argv) == 3:
        import docker

        dropped, kept = prune(docker.from_env(), float(sys.argv[2]))
        print(f"the suite's cache: {kept} entries this run used kept, {dropped} it did not use removed")
    elif sys.argv[1:] == ["clean"]:
        import docker

        n = clean(docker.from_env())
        print(f"removed the suite's cache: {n} tags and {CACHE}")
    elif sys.argv[1:] == ["prepare"]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        started = time.monotonic()
        prepare()
        print(f"the suite's cache is ready in {CACHE} ({time.monotonic() - started:.0f} s)")
    else:
        sys.exit("usage: python tests/testcache.py clean|prepare|prune SINCE")
