"""Step 3, wheelhouse: fill wheels/ from the lock; every file verified by sha256.

Downloads run in parallel into ``NAME.part`` files and resume with HTTP ranges after
an interruption. A file whose hash does not match is deleted and reported; it is
never moved into the wheelhouse, so nothing later can use it.
"""

from __future__ import annotations

import errno
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..contracts import AOT_BUILD_PLATFORM, AOT_CROSS_RUNTIME
from ..errors import DiskFull, InputError, IntegrityError, Interrupted, MissingFile, NetworkError, SglbuildError
from ..ui import Reporter, Transfer
from .hashing import VerifiedCache, sha256_file
from .lockfile import Deb, Lock, LockFile, Wheel, check_locks
from .profile import Profile, Target

_CHUNK = 1 << 20


@dataclass
class FetchResult:
    present: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # files deleted for a hash mismatch
    failed: dict[str, SglbuildError] = field(default_factory=dict)
    bytes: int = 0
    wanted: int = 0  # how many files the lock (or the platforms asked for) names


def verify_wheelhouse(lock: Lock, wheelhouse: Path, *, missing_ok: bool = False) -> bool:
    """Raise unless every wheel and Debian package of the lock is in the wheelhouse with its pinned sha256 (``missing_ok``:
    every one there). True when every one was there."""
    cache = VerifiedCache(wheelhouse)
    complete = True
    try:
        for w in lock.files:
            path = wheelhouse / w.filename
            if missing_ok and not path.is_file():
                complete = False
                continue
            if not path.is_file():
                how = "run 'sglbuild fetch'" if w.url else "place the prebuilt wheel in wheels/"
                raise MissingFile(f"{path} is missing from the wheelhouse", how)
            if cache.known_good(path, w.sha256):
                continue
            digest = sha256_file(path)
            if digest != w.sha256:
                cache.forget(w.filename)
                raise IntegrityError(f"{path} has sha256 {digest}, the lock pins {w.sha256}",
                                     "delete it and run 'sglbuild fetch'" if w.url else "replace the prebuilt wheel")
            cache.remember(path, w.sha256)
    finally:
        cache.save()
    return complete


def fetch_target(profile: Profile, target: Target, wheelhouse: Path, reporter: Reporter, *, jobs: int = 4,
                 platforms: tuple[str, ...] = ()) -> FetchResult:
    """``sglbuild fetch``: the files of TARGET's lock (PLATFORMS' closures only, when given: a machine that builds one
    platform of a family downloads that one's wheels)."""
    locks = check_locks(profile, target)
    unknown = [p for p in platforms if p not in locks.locks]
    if unknown:
        raise InputError(f"target {target.name!r} has no platform {unknown[0]}", f"its platforms: {', '.join(locks.locks)}")
    chosen = {p: lock for p, lock in locks.locks.items() if not platforms or p in platforms}
    if AOT_BUILD_PLATFORM in chosen:  # it compiles the other platforms' FlashInfer modules: their CUDA runtime to link
        runtimes = [w for p in target.aot_cross_platforms() if p not in chosen and (w := locks.locks[p].wheel(AOT_CROSS_RUNTIME))]
        chosen[AOT_BUILD_PLATFORM] = replace(chosen[AOT_BUILD_PLATFORM], wheels=[*chosen[AOT_BUILD_PLATFORM].wheels, *runtimes])
    return fetch(LockFile(locks.target, locks.inputs, chosen, multi=locks.multi), wheelhouse, reporter, jobs)


def fetch(lock: Lock | LockFile, wheelhouse: Path, reporter: Reporter, jobs: int = 4) -> FetchResult:
    wheelhouse.mkdir(parents=True, exist_ok=True)
    cache = VerifiedCache(wheelhouse)
    result = FetchResult(wanted=len(lock.files))
    todo: list[Wheel | Deb] = []
    for w in lock.files:
        path = wheelhouse / w.filename
        if path.is_file():
            if cache.known_good(path, w.sha256) or sha256_file(path) == w.sha256:
                cache.remember(path, w.sha256)
                result.present.append(w.filename)
                continue
            path.unlink()
            cache.forget(w.filename)
            result.removed.append(w.filename)
            reporter.info(f"[red]removed {w.filename}: sha256 does not match the lock[/red]")
        if w.url is None:
            result.failed[w.filename] = MissingFile(f"prebuilt wheel {path} is missing", "place it in wheels/ (its sha256 is pinned in the profile)")
            continue
        todo.append(w)
    stop = threading.Event()
    try:
        with reporter.transfer(f"fetching {len(todo)} files", 0) as bar, ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_download, w, wheelhouse, bar, stop): w for w in todo}
            try:
                for fut in as_completed(futures):
                    w = futures[fut]
                    try:
                        result.bytes += fut.result()
                    except DiskFull:
                        stop.set()
                        raise
                    except SglbuildError as exc:
                        result.failed[w.filename] = exc
                        if isinstance(exc, IntegrityError):
                            result.removed.append(w.filename)
                        continue
                    cache.remember(wheelhouse / w.filename, w.sha256)
                    result.downloaded.append(w.filename)
                    reporter.step("fetched", "ok", w.filename)
            except KeyboardInterrupt:
                stop.set()
                for f in futures:
                    f.cancel()
                raise
    except KeyboardInterrupt:
        raise Interrupted(f"fetch interrupted: {len(result.downloaded)} of {len(todo)} wheels downloaded",
                          "run 'sglbuild fetch' again to resume") from None
    finally:
        cache.save()
    if result.failed:
        # The failure to act on first: a file to place by hand, then a bad download, then the network.
        rank = {MissingFile: 0, IntegrityError: 1}
        name, exc = min(sorted(result.failed.items()), key=lambda item: rank.get(type(item[1]), 2))
        more = f" and {len(result.failed) - 1} more" if len(result.failed) > 1 else ""
        raise type(exc)(f"could not fetch {name}{more}: {exc.message}", exc.hint or "run 'sglbuild fetch' again; finished files are kept")
    return result


def _download(w: Wheel | Deb, wheelhouse: Path, bar: Transfer, stop: threading.Event) -> int:
    """Download (or resume) one wheel, verify it, and move it into place. Returns bytes read."""
    assert w.url is not None
    final = wheelhouse / w.filename
    part = wheelhouse / (w.filename + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(w.url, headers={"Range": f"bytes={have}-"} if have else {})
    read = 0
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            if have and resp.status != 206:
                have = 0  # the server ignored the range: start over
            bar.add_total(int(resp.headers.get("Content-Length") or 0))
            with open(part, "ab" if have else "wb") as out:
                while chunk := resp.read(_CHUNK):
                    if stop.is_set():
                        raise KeyboardInterrupt
                    out.write(chunk)
                    read += len(chunk)
                    bar.advance(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # already complete
            pass
        else:
            raise NetworkError(f"{w.url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise NetworkError(f"{w.url} did not answer: {getattr(exc, 'reason', exc)}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"disk full while writing {part}", "free space and run 'sglbuild fetch' again; it resumes") from None
        raise
    digest = sha256_file(part)
    if digest != w.sha256:
        part.unlink()
        raise IntegrityError(f"sha256 {digest} does not match the lock's {w.sha256}; the file was removed")
    os.replace(part, final)
    return read
