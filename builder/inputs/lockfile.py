"""The lock's data model: the resolved inputs of one target, pinned by version and sha256.

A lock is JSON (``locks/<target>.lock.json``), written with sorted keys so that a
re-lock with nothing new gives a byte-identical file and a readable diff. Reading and
checking it against the profile is here; making one is :mod:`builder.inputs.lock`'s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LockError
from .profile import Profile, Target

LOCK_VERSION = 1


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

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "version": LOCK_VERSION,
            "target": self.target,
            "inputs": self.inputs,
            "platform": asdict(self.platform),
            "base_image": self.base_image,
            "debian": dict(sorted(self.debian.items())),
            "wheels": [_wheel_dict(w) for w in sorted(self.wheels, key=lambda w: (w.stage, w.name))],
        }
        if self.passed_over:  # only where something was passed over: earlier locks keep their bytes (and digests)
            data["passed_over"] = list(self.passed_over)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @property
    def digest(self) -> str:
        """sha256 of the lock's canonical text: what an image built from it records."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def stage_wheels(self, stage: str) -> list[Wheel]:
        return sorted((w for w in self.wheels if w.stage == stage), key=lambda w: w.name)

    def wheel(self, name: str) -> Wheel | None:
        return next((w for w in self.wheels if w.name == name), None)


def _wheel_dict(w: Wheel) -> dict[str, Any]:
    d = asdict(w)
    d["requires"] = sorted(w.requires)
    return d


def lock_path(profile: Profile, target: Target) -> Path:
    return profile.root / "locks" / f"{target.name}.lock.json"


def pylock_path(profile: Profile, target: Target) -> Path:
    """PEP 751's name for a named lock file: pylock.NAME.toml."""
    return profile.root / "locks" / f"pylock.{target.name}.toml"


def parse_lock(text: str, source: str) -> Lock:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}", "re-create it with 'sglbuild lock'") from None
    try:
        if data.get("version") != LOCK_VERSION:
            raise LockError(f"{source}: lock format {data.get('version')!r} is not {LOCK_VERSION}", "re-create it with 'sglbuild lock'")
        return Lock(
            target=data["target"],
            inputs=data["inputs"],
            platform=Platform(**data["platform"]),
            debian=dict(data["debian"]),
            base_image=data.get("base_image"),
            passed_over=tuple(str(x) for x in data.get("passed_over", ())),
            wheels=[Wheel(**{**w, "requires": tuple(w.get("requires", ()))}) for w in data["wheels"]],
        )
    except LockError:
        raise
    except (KeyError, TypeError, AttributeError) as exc:
        raise LockError(f"{source}: malformed lock ({type(exc).__name__}: {exc})", "re-create it with 'sglbuild lock'") from None


def read_lock_file(path: Path) -> Lock:
    """A lock file by path (``verify --lock FILE``)."""
    try:
        return parse_lock(path.read_text(), str(path))
    except FileNotFoundError:
        raise LockError(f"{path}: no such lock file") from None


def read_lock(profile: Profile, target: Target) -> Lock:
    path = lock_path(profile, target)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LockError(f"{path}: no lock for target {target.name!r}", f"run 'sglbuild lock {target.name}'") from None
    lock = parse_lock(text, str(path))
    if lock.target != target.name:
        raise LockError(f"{path}: locks target {lock.target!r}, not {target.name!r}")
    return lock


def check_lock(profile: Profile, target: Target) -> Lock:
    """The lock, if it matches the profile; else a LockError saying what to run."""
    lock = read_lock(profile, target)
    if lock.inputs != target.inputs_digest():
        raise LockError(
            f"{lock_path(profile, target)}: out of date: the profile's target {target.name!r} changed since it was locked",
            f"run 'sglbuild lock {target.name}'",
        )
    for pin in target.pins():
        if pin.wheel:
            w = lock.wheel(pin.name)
            if w is None or w.filename != pin.wheel or w.sha256 != pin.sha256:
                raise LockError(f"{lock_path(profile, target)}: prebuilt wheel {pin.wheel} is not what the lock pins", f"run 'sglbuild lock {target.name}'")
    return lock
