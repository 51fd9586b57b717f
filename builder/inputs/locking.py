"""Step 2, ``sglbuild lock``: keep an up-to-date lock, or resolve a new one; write it and its pylock.toml.

The data model and its reading are :mod:`builder.inputs.lockfile`'s; resolution is
:mod:`builder.inputs.resolve`'s. This module decides when to resolve, writes both files
atomically, checks that they agree (``lock --check``) and says what moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import LockError
from ..state import atomic_write
from .lockfile import Lock, LockFile, check_locks, lock_path, pylock_path, read_locks
from .profile import Profile, Target
from .pylock import pylock_text


def check_lock_files(profile: Profile, target: Target) -> LockFile:
    """``lock --check``: the lock matches the profile (every platform), and its pylock.toml the lock."""
    locks = check_locks(profile, target)
    path = pylock_path(profile, target)
    if not path.is_file() or path.read_text() != pylock_text(locks, target.index):
        raise LockError(f"{path}: {'missing' if not path.is_file() else 'does not match the lock'}",
                        f"run 'sglbuild lock {target.name}' (it rewrites it from the lock, no network needed)")
    return locks


def write_lock(profile: Profile, target: Target, locks: LockFile | Lock) -> Path:
    """Write the lock and its pylock.toml atomically: an interrupted or failed lock leaves the old files."""
    locks = locks if isinstance(locks, LockFile) else LockFile.single(locks)
    path = lock_path(profile, target)
    atomic_write(path, locks.to_json())
    atomic_write(pylock_path(profile, target), pylock_text(locks, target.index))
    return path


@dataclass
class Locked:
    path: Path
    lock: LockFile
    changes: list[str]  # one line per moved pin; [] when none moved
    resolved: bool  # False: the lock was up to date and kept (no network)


def lock_target(profile: Profile, target: Target, wheelhouse: Path, *, update: bool = False,
                on_resolve: Callable[[], None] = lambda: None) -> Locked:
    """``sglbuild lock``: keep an up-to-date lock (rewriting a stale pylock.toml from it); resolve otherwise.

    ``update`` resolves even an up-to-date lock, moving every pin to the newest the profile
    allows. A failed resolution leaves the old files as they were.
    """
    try:
        old: LockFile | None = read_locks(profile, target)
    except LockError:
        old = None
    if old is not None and not update and old.inputs == target.inputs_digest() and sorted(old.locks) == sorted(target.platform_names):
        try:
            check_lock_files(profile, target)
        except LockError:
            write_lock(profile, target, old)
        return Locked(lock_path(profile, target), old, [], resolved=False)
    from .resolve import resolve

    on_resolve()
    new = resolve(profile, target, wheelhouse)
    return Locked(write_lock(profile, target, new), new, lock_changes(old, new), resolved=True)


def lock_changes(old: LockFile | None, new: LockFile) -> list[str]:
    """What moved between two locks, one line per package (per platform where there are several)."""
    lines = []
    for platform, lock in sorted(new.locks.items()):
        before = old.locks.get(platform) if old is not None else None
        prefix = f"{platform}: " if new.multi else ""
        lines += [prefix + line for line in _changes(before, lock)]
    return lines


def _changes(old: Lock | None, new: Lock) -> list[str]:
    """What moved between two closures: versions, and hashes when only they changed."""
    if old is None:
        return [f"new lock: {len(new.wheels)} wheels, {len(new.debian)} Debian packages"]
    lines = []
    before, after = {w.name: w for w in old.wheels}, {w.name: w for w in new.wheels}
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None:
            lines.append(f"+ {name} {b.version} (sha256 {b.sha256[:12]})")
        elif b is None:
            lines.append(f"- {name} {a.version}")
        elif (a.version, a.sha256) != (b.version, b.sha256):
            lines.append(f"~ {name} {a.version} -> {b.version} (sha256 {a.sha256[:12]} -> {b.sha256[:12]})")
    for name in sorted(set(old.debian) | set(new.debian)):
        a, b = old.debian.get(name), new.debian.get(name)
        if a != b:
            lines.append(f"~ deb {name} {a or 'absent'} -> {b or 'absent'}")
    return lines
