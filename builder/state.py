"""What sglbuild keeps on this machine, and the one way it writes files.

- The state directory (``$SGLBUILD_STATE``, default ``~/.local/state/sglbuild``) holds JSON
  records: which images passed verify here (what ``push`` and ``promote`` trust), the image
  built for each stage key, what was pushed, the flags derived from a stage's evidence, and
  the static probe's answers by image content (layers and run-time settings).
- Records are read, changed and written back under a lock of their file (:func:`_records`): two processes at once
  never lose each other's records.
- :func:`atomic_write` is every write of a file that must never be seen half-written (locks,
  records, caches): a temporary file named with the process ID beside it, then a rename, so
  two processes never share a temporary file and a killed one leaves the old file or the new.
- :func:`scratch` makes sglbuild's temporary directories, named by ``contracts.SCRATCH_PREFIXES``,
  which is also how ``sglbuild gc`` finds what a killed run left.

An image pulled by digest has the same ID as the one pushed, so a record made before the push
still names it. Each verify record also keeps the image's content ID (its config without
provenance labels) and the gate's key, so a rebuild that changed only the revision label is not
smoke-tested and verified again.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .contracts import SCRATCH_PREFIXES


def state_dir() -> Path:
    return Path(os.environ.get("SGLBUILD_STATE", Path.home() / ".local" / "state" / "sglbuild"))


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write PATH whole or not at all (a temporary file named with this process's ID, then a rename).

    A failed write (a full disk) removes its temporary file and raises.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def engine_lock(where: str, exclusive: bool = False) -> Iterator[None]:
    """Held (shared) by every build on the engine at WHERE while it runs; gc holds it exclusively. A file in the temporary
    directory named by the engine's address, whatever state directory each process uses; a killed process's lock is
    released by the kernel."""
    import hashlib

    from .errors import EnvironmentProblem

    path = Path(tempfile.gettempdir()) / f"sglbuild-engine-{hashlib.sha256(where.encode()).hexdigest()[:16]}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    with os.fdopen(fd, "r+") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            if exclusive:
                raise EnvironmentProblem("a build is running on this machine", "run 'sglbuild gc' when it has finished") from None
            fcntl.flock(f, fcntl.LOCK_SH)  # another build holds it shared, or gc for a moment: wait
        try:
            if exclusive:
                yield
            else:
                with _present(path.with_suffix(".builds")):
                    yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_MINE: set[Path] = set()


@contextmanager
def _present(builds: Path) -> Iterator[None]:
    """This build's own locked file among the engine's running builds (see :func:`alone`)."""
    builds.mkdir(mode=0o777, exist_ok=True)
    mine = builds / f"{os.getpid()}-{id(builds)}"
    with open(mine, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _MINE.add(mine)
        try:
            yield
        finally:
            _MINE.discard(mine)
            mine.unlink(missing_ok=True)


def alone(where: str) -> bool:
    """No other build runs on the engine at WHERE now: a stage image this build replaced may go at once. (Another
    build may still be about to use it as a parent; if one runs, the image is left for gc, which waits for none.)"""
    import hashlib

    builds = Path(tempfile.gettempdir()) / f"sglbuild-engine-{hashlib.sha256(where.encode()).hexdigest()[:16]}.builds"
    for other in builds.glob("*") if builds.is_dir() else []:
        if other in _MINE:
            continue
        try:
            with open(other) as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # got it: a build killed before it could remove its file
            other.unlink(missing_ok=True)
        except BlockingIOError:
            return False
        except FileNotFoundError:
            continue
    return True


def atomic_copy(source: Path, path: Path) -> None:
    """Copy SOURCE to PATH whole or not at all (a hard link where it can, else a copy, then a rename)."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def base_cache_dir() -> Path | None:
    """$SGLBUILD_BASE_CACHE: where bootstrapped root filesystems are kept for another engine or a later build (opt-in)."""
    where = os.environ.get("SGLBUILD_BASE_CACHE")
    return Path(where) if where else None


def scratch(kind: str, where: Path | None = None) -> tempfile.TemporaryDirectory:
    """A temporary directory of KIND (a key of contracts.SCRATCH_PREFIXES), in WHERE or the temporary directory."""
    return tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIXES[kind], dir=where)


def scratch_leftovers(wheelhouse: Path) -> list[Path]:
    """Scratch directories a killed run may have left: beside the wheelhouse and in the temporary directory."""
    from .contracts import BESIDE_WHEELHOUSE

    tmp = Path(tempfile.gettempdir())
    found: list[Path] = []
    for kind, prefix in SCRATCH_PREFIXES.items():
        found += (wheelhouse if kind in BESIDE_WHEELHOUSE else tmp).glob(prefix + "*")
    return sorted(found)


def _load(name: str) -> dict[str, Any]:
    try:
        return json.loads((state_dir() / name).read_text())
    except (OSError, ValueError):
        return {}


def _save(name: str, data: dict[str, Any]) -> None:
    atomic_write(state_dir() / name, json.dumps(data, indent=2, sort_keys=True))


@contextmanager
def _records(name: str) -> Iterator[dict[str, Any]]:
    """The records of NAME to read and change, written back whole when the block ends: under an exclusive lock, so two
    processes at once (two builds, a build and a verify) never lose each other's records."""
    where = state_dir()
    where.mkdir(parents=True, exist_ok=True)
    with open(where / f".{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        records = _load(name)
        yield records
        _save(name, records)


def _update(name: str, key: str, value: Any) -> None:
    with _records(name) as records:
        records[key] = value


# -- which images passed verify here ---------------------------------------------------------------

def record_verified(image_id: str, *, gpu_checked: bool, content_id: str | None = None, gate_key: str | None = None) -> None:
    with _records("verified.json") as records:
        old = records.get(image_id, {})
        records[image_id] = {"time": int(time.time()), "gpu": gpu_checked or old.get("gpu", False),
                             "content": content_id or old.get("content"), "gate": gate_key or old.get("gate")}


def verified(image_id: str) -> dict[str, Any] | None:
    return _load("verified.json").get(image_id)


def passed_gate(content_id: str, gate_key: str) -> str | None:
    """The ID of an image with this content that passed this gate here, if there is one."""
    for image_id, record in _load("verified.json").items():
        if record.get("content") == content_id and record.get("gate") == gate_key:
            return image_id
    return None


# -- the image built for each stage key -----------------------------------------------------------

def record_stage(key: str, image_id: str, content: str) -> None:
    """The image built (or pulled and checked) for stage key KEY, and its content (what a process in it sees: layers and
    run-time settings): a later build reuses only an image of that content under the stage's tag."""
    _update("stages.json", key, {"id": image_id, "content": content})


def stage_image(key: str) -> dict[str, str] | None:
    """{"id", "content"} recorded for stage key KEY (a record of an older sglbuild: its ID alone)."""
    found = _load("stages.json").get(key)
    return {"id": found, "content": ""} if isinstance(found, str) else found


# -- pushes ------------------------------------------------------------------------------------------

def record_push(image_id: str, ref: str, tag: str) -> None:
    with _records("pushes.json") as pushes:
        pushes.setdefault(image_id, []).append({"ref": ref, "tag": tag, "time": int(time.time())})


# -- answers that depend only on an image's content: derived flags, the static probe's reply ---------

def _entry(name: str, key: str) -> Path:
    import hashlib

    return state_dir() / name / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def remembered(name: str, key: str) -> Any:
    """What was kept under KEY in the cache NAME ("evidence", "probe"), or None. One file per entry."""
    try:
        entry = json.loads(_entry(name, key).read_text())
    except (OSError, ValueError):
        return None
    return entry.get("value") if entry.get("key") == key else None


def remember(name: str, key: str, value: Any) -> None:
    atomic_write(_entry(name, key), json.dumps({"key": key, "value": value}))
