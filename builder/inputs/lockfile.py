"""The lock's data model: the resolved inputs of one target, pinned by version and sha256.

A lock is JSON (``locks/<target>.lock.json``), written with sorted keys so that a
re-lock with nothing new gives a byte-identical file and a readable diff. A target without
``[platforms]`` has one closure (format 1, linux/amd64); a target with it has one closure per
platform, each with its own wheels, hashes and Debian packages (format 2). :class:`Lock` is one
platform's closure, what a build of that platform's image reads; :class:`LockFile` is the file.
Every image carries the whole file, and its digest is the file's. Reading and checking it
against the profile is here; making one is :mod:`builder.inputs.locking`'s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..contracts import DEFAULT_PLATFORM
from ..errors import LockError
from .profile import Profile, Target

LOCK_VERSION = 1  # one platform
MULTI_LOCK_VERSION = 2  # one closure per platform


@dataclass(frozen=True)
class Wheel:
    name: str  # canonical project name
    version: str
    filename: str
    sha256: str
    url: str | None  # None: a prebuilt wheel placed in wheels/ by hand
    stage: str  # the image stage that installs it (contracts.TOOLS for build tools)
    size: int | None = None
    requires: tuple[str, ...] = ()  # canonical names it depends on, for the image's platform


@dataclass(frozen=True)
class Deb:
    """A Debian package a stage installs over the base: the file, from the suite's signed index, by sha256.

    It has a wheel's fields that fetch, the wheelhouse check and the wheel server read, so it travels with them.
    """

    name: str  # the package
    version: str
    filename: str  # the .deb's name in the wheelhouse (the pool file's)
    sha256: str
    url: str  # the mirror's pool path
    stage: str
    size: int | None = None
    architecture: str = "amd64"  # Debian's (amd64, arm64, all)


@dataclass(frozen=True)
class Platform:
    """The image's interpreter and platform, which resolution targets instead of the host's."""

    python: str  # full CPython version, e.g. "3.11.2"
    glibc: str  # e.g. "2.36"
    machine: str = "x86_64"

    @property
    def python_short(self) -> str:
        return ".".join(self.python.split(".")[:2])


@dataclass
class Lock:
    target: str
    inputs: str  # Target.inputs_digest() at lock time
    platform: Platform
    debian: dict[str, str]  # package -> version (empty for a registry base)
    wheels: list[Wheel] = field(default_factory=list)
    base_image: str | None = None  # registry base, by digest
    # One line per release newer than the one locked that the profile admits but that did not resolve, and why.
    passed_over: tuple[str, ...] = ()
    platform_name: str = DEFAULT_PLATFORM  # the Docker platform of the image built from it
    file_text: str | None = field(default=None, compare=False, repr=False)  # the whole file it was read from (format 2)
    debs: list[Deb] = field(default_factory=list)  # Debian packages stages install over the base

    def body(self) -> dict[str, Any]:
        """This platform's closure, as the file holds it."""
        data: dict[str, Any] = {
            "platform": asdict(self.platform),
            "base_image": self.base_image,
            "debian": dict(sorted(self.debian.items())),
            "wheels": [_wheel_dict(w) for w in sorted(self.wheels, key=lambda w: (w.stage, w.name))],
        }
        if self.passed_over:  # only where something was passed over: earlier locks keep their bytes (and digests)
            data["passed_over"] = list(self.passed_over)
        if self.debs:  # likewise: only where a stage installs Debian packages
            data["debs"] = [asdict(d) for d in sorted(self.debs, key=lambda d: (d.stage, d.name))]
        return data

    def to_json(self) -> str:
        """The single-platform lock file (format 1)."""
        return _dump({"version": LOCK_VERSION, "target": self.target, "inputs": self.inputs, **self.body()})

    def text(self) -> str:
        """The text of the lock file this closure belongs to: what the image carries and its label's digest names."""
        return self.file_text if self.file_text is not None else self.to_json()

    @property
    def digest(self) -> str:
        """sha256 of the lock file's text: what an image built from it records."""
        return hashlib.sha256(self.text().encode()).hexdigest()

    @property
    def files(self) -> list[Wheel | Deb]:
        """Every file the build installs from the wheelhouse: the wheels and the stages' Debian packages."""
        return [*self.wheels, *self.debs]

    def stage_debs(self, stage: str) -> list[Deb]:
        return sorted((d for d in self.debs if d.stage == stage), key=lambda d: d.name)

    def stage_wheels(self, stage: str) -> list[Wheel]:
        return sorted((w for w in self.wheels if w.stage == stage), key=lambda w: w.name)

    def wheel(self, name: str) -> Wheel | None:
        return next((w for w in self.wheels if w.name == name), None)


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


@dataclass
class LockFile:
    """A target's lock file: one closure (format 1), or one per platform (format 2)."""

    target: str
    inputs: str
    locks: dict[str, Lock]  # platform -> its closure
    multi: bool = False  # format 2 (the target declares [platforms])

    @classmethod
    def single(cls, lock: Lock) -> "LockFile":
        """A single-platform lock file (format 1) of LOCK."""
        return cls(lock.target, lock.inputs, {lock.platform_name: lock})

    def to_json(self) -> str:
        if not self.multi:
            return next(iter(self.locks.values())).to_json()
        return _dump({"version": MULTI_LOCK_VERSION, "target": self.target, "inputs": self.inputs,
                      "platforms": {p: lock.body() for p, lock in sorted(self.locks.items())}})

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def lock(self, platform: str | None = None) -> Lock:
        """PLATFORM's closure (the first platform's when None), knowing the whole file's text."""
        name = platform or next(iter(self.locks))
        if name not in self.locks:
            raise LockError(f"the lock of target {self.target!r} has no closure for {name}", f"its platforms: {', '.join(self.locks)}")
        lock = self.locks[name]
        return replace(lock, file_text=self.to_json()) if self.multi else lock

    def summary(self) -> str:
        """"170 wheels, 169 Debian packages" (per platform, where there are several)."""
        def one(lock: Lock) -> str:
            return f"{len(lock.wheels)} wheels, {len(lock.debian) + len(lock.debs)} Debian packages"
        if not self.multi:
            return one(next(iter(self.locks.values())))
        return "; ".join(f"{p}: {one(lock)}" for p, lock in sorted(self.locks.items()))

    @property
    def files(self) -> list[Wheel | Deb]:
        """Every platform's files, each once (a pure-Python wheel or an arch-all package serves several)."""
        seen: dict[str, Wheel | Deb] = {}
        for lock in self.locks.values():
            for w in lock.files:
                seen.setdefault(w.filename, w)
        return list(seen.values())


def _wheel_dict(w: Wheel) -> dict[str, Any]:
    d = asdict(w)
    d["requires"] = sorted(w.requires)
    return d


def lock_path(profile: Profile, target: Target) -> Path:
    return profile.root / "locks" / f"{target.name}.lock.json"


def pylock_path(profile: Profile, target: Target) -> Path:
    """PEP 751's name for a named lock file: pylock.NAME.toml."""
    return profile.root / "locks" / f"pylock.{target.name}.toml"


def parse_lock_file(text: str, source: str) -> LockFile:
    """A lock file's text (either format) as its closures."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}", "re-create it with 'sglbuild lock'") from None
    try:
        version = data.get("version")
        if version == LOCK_VERSION:
            lock = _closure(data, data["target"], data["inputs"], DEFAULT_PLATFORM)
            return LockFile(lock.target, lock.inputs, {DEFAULT_PLATFORM: lock})
        if version == MULTI_LOCK_VERSION:
            locks = {p: _closure(body, data["target"], data["inputs"], p) for p, body in dict(data["platforms"]).items()}
            if not locks:
                raise LockError(f"{source}: the lock holds no platform", "re-create it with 'sglbuild lock'")
            return LockFile(data["target"], data["inputs"], locks, multi=True)
        raise LockError(f"{source}: lock format {version!r} is not {LOCK_VERSION} or {MULTI_LOCK_VERSION}", "re-create it with 'sglbuild lock'")
    except LockError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise LockError(f"{source}: malformed lock ({type(exc).__name__}: {exc})", "re-create it with 'sglbuild lock'") from None


def _wheel(w: dict[str, Any]) -> Wheel:
    """One wheel's entry, its fields of the types the rest of sglbuild writes them with (a hand-edited lock's null or
    number is a malformed lock here, not an error deep in a later step)."""
    wheel = Wheel(**{**w, "requires": tuple(w.get("requires", ()))})
    for name in ("name", "version", "filename", "sha256", "stage"):
        if not isinstance(getattr(wheel, name), str):
            raise ValueError(f"wheel {w.get('filename', '?')}: {name} is {getattr(wheel, name)!r}, not a string")
    if len(wheel.sha256) != 64 or any(c not in "0123456789abcdef" for c in wheel.sha256):
        raise ValueError(f"wheel {wheel.filename}: sha256 {wheel.sha256!r} is not 64 hex digits")
    if not all(isinstance(r, str) for r in wheel.requires) or not isinstance(wheel.url, (str, type(None))):
        raise ValueError(f"wheel {wheel.filename}: requires or url of the wrong type")
    return wheel


def _closure(data: dict[str, Any], target: str, inputs: str, platform: str) -> Lock:
    return Lock(
        target=target,
        inputs=inputs,
        platform=Platform(**data["platform"]),
        debian=dict(data["debian"]),
        base_image=data.get("base_image"),
        passed_over=tuple(str(x) for x in data.get("passed_over", ())),
        wheels=[_wheel(w) for w in data["wheels"]],
        debs=[Deb(**d) for d in data.get("debs", ())],
        platform_name=platform,
    )


def parse_lock(text: str, source: str, platform: str | None = None) -> Lock:
    """PLATFORM's closure of a lock file's text (the first platform's when None)."""
    return parse_lock_file(text, source).lock(platform)


def read_lock_file(path: Path) -> LockFile:
    """A lock file by path (``verify --lock FILE``)."""
    try:
        return parse_lock_file(path.read_text(), str(path))
    except FileNotFoundError:
        raise LockError(f"{path}: no such lock file") from None


def read_locks(profile: Profile, target: Target) -> LockFile:
    path = lock_path(profile, target)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LockError(f"{path}: no lock for target {target.name!r}", f"run 'sglbuild lock {target.name}'") from None
    locks = parse_lock_file(text, str(path))
    if locks.target != target.name:
        raise LockError(f"{path}: locks target {locks.target!r}, not {target.name!r}")
    return locks


def read_lock(profile: Profile, target: Target, platform: str | None = None) -> Lock:
    return read_locks(profile, target).lock(platform)


def check_locks(profile: Profile, target: Target) -> LockFile:
    """The lock file, if it matches the profile (every platform the target declares); else a LockError saying what to run."""
    locks = read_locks(profile, target)
    stale = locks.inputs != target.inputs_digest() or sorted(locks.locks) != sorted(target.platform_names)
    if stale:
        raise LockError(
            f"{lock_path(profile, target)}: out of date: the profile's target {target.name!r} changed since it was locked",
            f"run 'sglbuild lock {target.name}'",
        )
    for lock in locks.locks.values():
        _check_prebuilt(profile, target, lock)
    return locks


def check_lock(profile: Profile, target: Target, platform: str | None = None) -> Lock:
    """PLATFORM's closure (the first platform's when None), if the lock matches the profile."""
    return check_locks(profile, target).lock(platform)


def _check_prebuilt(profile: Profile, target: Target, lock: Lock) -> None:
    """A prebuilt wheel the profile pins is the one the lock pins."""
    for pin in target.pins():
        if pin.wheel:
            w = lock.wheel(pin.name)
            if w is None or w.filename != pin.wheel or w.sha256 != pin.sha256:
                raise LockError(f"{lock_path(profile, target)}: prebuilt wheel {pin.wheel} is not what the lock pins", f"run 'sglbuild lock {target.name}'")
