"""Step 2, lock (resolution): pin every input for the image's platform, not the host's.

Debian packages are resolved by ``mmdebstrap --simulate`` against the profile's mirror.
Python distributions are resolved by pip in isolated mode (no host pip configuration)
with the image's CPython, ABI and manylinux tags; pip's JSON report gives each file's
URL and sha256, and the dependency graph is re-evaluated here with the image's markers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..contracts import AOT_BUILD_PLATFORM, PLATFORMS, STAGE_AOT_CROSS, TOOLS
from ..errors import IntegrityError, MissingFile, NetworkError, ResolutionError, ToolMissing
from ..state import remember, remembered, scratch
from .hashing import sha256_file
from . import debian as debian_index
from .lockfile import Deb, Lock, LockFile, Platform, Wheel
from .profile import Pin, Profile, Target

_INST = re.compile(r"^Inst (\S+) \((\S+) ")


def resolve(profile: Profile, target: Target, wheelhouse: Path) -> LockFile:
    """Every platform's closure of TARGET: its Debian packages and its wheels, each for that platform."""
    return LockFile(target.name, target.inputs_digest(), {p: resolve_platform(target, p, wheelhouse) for p in target.platform_names},
                    multi=target.declares_platforms)


def resolve_platform(target: Target, platform_name: str, wheelhouse: Path) -> Lock:
    machine, debian_arch, _ = PLATFORMS[platform_name]
    if target.base.bootstrapped:
        debian = resolve_debian(target, debian_arch)
        platform = platform_from_debian(debian, machine)
    else:
        debian, platform = {}, Platform(python=target.base.python or "3.11", glibc=target.base.glibc, machine=machine)
    debs = resolve_stage_debs(target, debian_arch, debian) if target.base.bootstrapped else []
    wheels = resolve_python(target, platform, wheelhouse)
    passed = passed_over(target, platform, wheelhouse, wheels)
    return Lock(
        debs=debs,
        passed_over=passed,
        target=target.name,
        inputs=target.inputs_digest(),
        platform=platform,
        debian=debian,
        wheels=wheels,
        base_image=target.base.image,
        platform_name=platform_name,
    )


def resolve_debian(target: Target, arch: str = "amd64", extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Every package (and version) a bootstrap of the base (with EXTRA packages) would install today, for Debian
    architecture ARCH."""
    if shutil.which("mmdebstrap") is None:
        raise ToolMissing("mmdebstrap is not installed", "apt-get install mmdebstrap")
    base = target.base
    include = (*base.packages, *extra)
    key = _resolution_key(target, arch, include)
    if key is not None and (kept := remembered("debian", key)) is not None:
        return dict(kept)
    cmd = ["mmdebstrap", "-v", "--simulate", "--variant=minbase", f"--architectures={arch}"]
    if include:
        cmd.append("--include=" + ",".join(include))
    cmd += [base.suite, "/dev/null", base.mirror]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(base.source_date_epoch)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = _last_error(proc.stderr)
        if re.search(r"(Failed to fetch|Could not resolve|Temporary failure|Connection|apt-get update failed)", proc.stderr):
            raise NetworkError(f"Debian mirror {base.mirror} did not answer: {tail}", "check the mirror URL and the network")
        raise ResolutionError(f"mmdebstrap could not resolve the base packages: {tail}", "check [base] packages and suite")
    packages: dict[str, str] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = _INST.match(line)
        if m:
            packages[m.group(1).split(":")[0]] = m.group(2)
    if not packages:
        raise ResolutionError("mmdebstrap --simulate listed no package", "check the mirror and suite")
    if key is not None:
        remember("debian", key, packages)
    return packages


def _resolution_key(target: Target, arch: str, include: tuple[str, ...]) -> str | None:
    """What mmdebstrap --simulate's answer depends on: the suite's index as the mirror serves it now (its InRelease names
    every Packages file by its hash), the packages asked for, the architecture and mmdebstrap's own version. A lock of a
    target with the same base (every small target of a project, each platform's base twice for a stage's packages) then
    resolves it once while the mirror does not move. None when the mirror does not answer (mmdebstrap then says so)."""
    base = target.base
    try:
        release = debian_index.fetch(f"{base.mirror.rstrip('/')}/dists/{base.suite}/InRelease")
    except NetworkError:
        return None
    return json.dumps(["mmdebstrap --simulate --variant=minbase", _mmdebstrap_version(), base.mirror, base.suite, arch,
                       sorted(include), hashlib.sha256(release).hexdigest()])


@functools.cache
def _mmdebstrap_version() -> str:
    return subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout.strip()


def resolve_stage_debs(target: Target, arch: str, base: dict[str, str]) -> list[Deb]:
    """The Debian packages each stage adds over the base's closure, each found (file, sha256) in the suite's signed index.

    The closure is resolved with the base's packages and every stage's up to this one, so a stage's packages are
    exactly what it adds; a package the base already has at another version cannot be installed over it.
    """
    index = None
    have, asked, debs = dict(base), [], []
    wanted = [(s.name, s.debian) for s in target.stages if s.debian]
    if arch == PLATFORMS[AOT_BUILD_PLATFORM][1] and target.aot_cross_compilers():  # over the toolchain: FlashInfer's cross stage
        wanted.append((STAGE_AOT_CROSS, target.aot_cross_compilers()))
    for stage_name, packages in wanted:
        asked += packages
        closure = resolve_debian(target, arch, tuple(asked))
        moved = sorted(f"{p} {have[p]} -> {v}" for p, v in closure.items() if p in have and have[p] != v)
        if moved:
            raise ResolutionError(f"stage {stage_name!r}'s Debian packages need other versions of the base's: {', '.join(moved)}",
                                  "lock again (the mirror moved between the two resolutions) or add them to [base] packages")
        index = index or debian_index.packages_index(target.base.mirror, target.base.suite, arch)
        for name, version in sorted(closure.items()):
            if name in have:
                continue
            entry = index.get((name, version))
            if entry is None:
                raise ResolutionError(f"{name} {version} is not in the {arch} index of {target.base.suite} on {target.base.mirror}",
                                      "lock again: the mirror moved while it was read")
            debs.append(Deb(name=name, version=version, filename=entry.filename.rsplit("/", 1)[-1], sha256=entry.sha256,
                            url=f"{target.base.mirror.rstrip('/')}/{entry.filename}", stage=stage_name, size=entry.size,
                            architecture=entry.filename.rsplit("_", 1)[-1].removesuffix(".deb")))
            have[name] = version
    return debs


def platform_from_debian(debian: dict[str, str], machine: str = "x86_64") -> Platform:
    py = [(n, v) for n, v in debian.items() if re.fullmatch(r"python3\.\d+", n)]
    if not py:
        raise ResolutionError("the base installs no CPython (python3.X)", "add python3 and python3-venv to [base] packages")
    if "libc6" not in debian:
        raise ResolutionError("the base has no libc6")
    upstream = lambda v: v.split(":")[-1].split("-")[0].split("+")[0]  # noqa: E731
    return Platform(python=upstream(py[0][1]), glibc=upstream(debian["libc6"]), machine=machine)


def target_environment(platform: Platform) -> dict[str, str]:
    """PEP 508 marker values of the image (not of the machine running sglbuild)."""
    env = default_environment()
    env.update(
        implementation_name="cpython",
        implementation_version=platform.python,
        os_name="posix",
        platform_machine=platform.machine,
        platform_python_implementation="CPython",
        platform_system="Linux",
        python_full_version=platform.python,
        python_version=platform.python_short,
        sys_platform="linux",
    )
    env.pop("platform_release", None)
    env.pop("platform_version", None)
    return env


def pip_target_args(platform: Platform) -> list[str]:
    """pip's flags for the image's tags; pip needs every manylinux level spelled out."""
    major, minor = (int(x) for x in platform.glibc.split(".")[:2])
    args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", platform.python]
    py = platform.python_short.replace(".", "")
    for abi in (f"cp{py}", "abi3", "none"):
        args += ["--abi", abi]
    for m in range(minor, 4, -1):
        args += ["--platform", f"manylinux_{major}_{m}_{platform.machine}"]
    for legacy, needs in (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5)):
        if minor >= needs:
            args += ["--platform", f"{legacy}_{platform.machine}"]
    return args


def resolve_python(target: Target, platform: Platform, wheelhouse: Path) -> list[Wheel]:
    """The app's closure, split into stages, plus build tools (resolved on their own)."""
    app_pins = [p for s in target.stages for p in s.requires]
    wheels = list(_assign_stages(target, _pip_resolve(target, app_pins, platform, wheelhouse), platform))
    if target.tools:
        tools = _pip_resolve(target, list(target.tools), platform, wheelhouse)
        wheels += [replace(w, stage=TOOLS) for w in tools.values()]
    return sorted(wheels, key=lambda w: (w.stage, w.name))


_EXPLAIN_AT_MOST = 6


def passed_over(target: Target, platform: Platform, wheelhouse: Path, wheels: list[Wheel]) -> tuple[str, ...]:
    """Why each release of the application (the last stage's requirements) newer than the one locked, that its
    range admits, was not taken: one line each. (Earlier stages' pins follow from the application's.)

    pip's resolver backtracks past a release whose dependencies the index cannot serve and says nothing;
    a lock that silently stops short of the newest release would hide that. Each newer release is
    resolved alone, pinned exactly (with the other stages' pins), and pip's one-line reason kept.
    """
    locked = {w.name: w.version for w in wheels}
    lines: list[str] = []
    pins = [p for s in target.stages for p in s.requires]
    for pin in target.stages[-1].requires:
        spec = Requirement(pin.requirement).specifier
        if pin.wheel or pin.name not in locked or any(s.operator in ("==", "===") for s in spec):
            continue
        newer = [v for v in _index_versions(pin.index or target.index, pin.name)
                 if v > Version(locked[pin.name]) and spec.contains(v, prereleases=pin.pre)]
        for version in sorted(newer, reverse=True)[:_EXPLAIN_AT_MOST]:
            exact = replace(pin, requirement=f"{pin.name}=={version}")
            try:
                _pip_resolve(target, [exact if p is pin else p for p in pins], platform, wheelhouse)
                why = "resolves alone, but not with the other stages' pins"
            except ResolutionError as exc:
                why = _why(exc.message)
            lines.append(f"{pin.name} {version}: passed over: {why}")
        if len(newer) > _EXPLAIN_AT_MOST:
            lines.append(f"{pin.name}: {len(newer) - _EXPLAIN_AT_MOST} older releases newer than {locked[pin.name]} not tried")
    return tuple(lines)


def _index_versions(index: str, project: str) -> list[Version]:
    """The releases an index serves for PROJECT (PEP 691's JSON), wheels or not; [] if it does not say."""
    url = index.rstrip("/") + f"/{canonicalize_name(project)}/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"  # JSON where the index speaks it (PEP 691)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=30) as r:
            body, ctype = r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError:
        return []  # the index answered, and lists nothing for it
    except (urllib.error.URLError, OSError) as exc:
        raise NetworkError(f"package index {index} did not list {project}: {getattr(exc, 'reason', exc)}", "check the network") from None
    out: set[Version] = set()
    if "json" in ctype:
        for v in json.loads(body).get("versions", []):
            try:
                out.add(Version(v))
            except InvalidVersion:
                pass
    else:  # a PEP 503 page: the versions are in the file names
        for filename in (f.strip() for f in re.findall(r">([^<>]+)</a>", body.decode("utf-8", "replace"))):
            try:
                out.add(parse_wheel_filename(filename)[1] if filename.endswith(".whl") else parse_sdist_filename(filename)[1])
            except ValueError:  # packaging's InvalidWheelFilename and InvalidSdistFilename
                pass
    return sorted(out)


def _why(message: str) -> str:
    """pip's reason, shortened to what a reader needs: the requirement the index cannot serve."""
    m = re.search(r"(?:Could not find a version that satisfies the requirement|No matching distribution found for) (\S+)", message)
    if m:
        return f"requires {m.group(1)}, which the index does not serve"
    return " ".join(message.split(": ", 1)[-1].split())[:200]


def _check_index(url: str, project: str) -> None:
    """Fail fast, in one line, when an index does not answer at all."""
    probe = url.rstrip("/") + f"/{canonicalize_name(project)}/"
    try:
        with urllib.request.urlopen(probe, timeout=20):
            pass
    except urllib.error.HTTPError:
        pass  # the index answered; a 404 for this project is pip's to report
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetworkError(f"package index {url} did not answer: {reason}", "check the URL and the network") from None


def _local_wheels(pins: list[Pin], wheelhouse: Path, links: Path) -> None:
    for pin in pins:
        if not pin.wheel:
            continue
        path = wheelhouse / pin.wheel
        if not path.is_file():
            raise MissingFile(f"prebuilt wheel {path} is missing", "place the wheel in wheels/ (its sha256 is pinned in the profile)")
        name, version, _, _ = parse_wheel_filename(pin.wheel)
        if canonicalize_name(name) != pin.name or not Requirement(pin.requirement).specifier.contains(version, prereleases=True):
            raise ResolutionError(f"prebuilt wheel {pin.wheel} is not {pin.requirement}")
        digest = sha256_file(path)
        if digest != pin.sha256:
            raise IntegrityError(f"prebuilt wheel {path} has sha256 {digest}, the profile pins {pin.sha256}", "replace the file or fix the pin")
        (links / pin.wheel).symlink_to(path.resolve())


def _pip_resolve(target: Target, pins: list[Pin], platform: Platform, wheelhouse: Path) -> dict[str, Wheel]:
    """PINS' closure for PLATFORM, by pip's resolver. pip evaluates environment markers with this machine's values
    (its --platform sets only the tags), so for another machine it misses what is needed there only (sglang's
    av and decord2 on aarch64) and picks what is needed here only: the graph is walked with the image's markers,
    what pip missed is asked for by name and resolved again, and what nothing needs there is dropped."""
    asked = list(pins)
    for _ in range(4):
        wheels, missing = _pip_once(target, asked, platform, wheelhouse)
        if not missing:
            break
        asked += [Pin(str(req)) for req in missing]
    roots, seen = [p.name for p in pins], set()
    while roots:
        name = roots.pop()
        if name not in seen and name in wheels:
            seen.add(name)
            roots.extend(wheels[name].requires)
    return {name: w for name, w in wheels.items() if name in seen}


def _pip_once(target: Target, pins: list[Pin], platform: Platform, wheelhouse: Path) -> tuple[dict[str, Wheel], list[Requirement]]:
    """One run of pip's resolver: the wheels it picked (their dependencies by the image's markers), and the requirements
    that apply on the image's platform which it did not pick, or picked at a version they exclude (without their markers)."""
    indexes = [target.index] + sorted({p.index for p in pins if p.index})
    for url in indexes:
        _check_index(url, Requirement(pins[0].requirement).name)
    with scratch("resolve") as tmp:
        links = Path(tmp, "links")
        links.mkdir()
        _local_wheels(pins, wheelhouse, links)
        report = Path(tmp, "report.json")
        _run_pip(_pip_command(pins, platform, indexes, links, report, Path(tmp, "t")), platform)
        picked = _picked(json.loads(report.read_text())["install"], pins)
    env = target_environment(platform)
    extras = _spread_extras(picked, env)
    return ({name: replace(p.wheel, requires=tuple(sorted({canonicalize_name(r.name) for r in _edges(p.requires, env, extras[name])})))
             for name, p in picked.items()}, _unmet(picked, env, extras))


def _pip_command(pins: list[Pin], platform: Platform, indexes: list[str], links: Path, report: Path, scratch_target: Path) -> list[str]:
    """pip's dry run for PINS on the image's PLATFORM, its JSON report to REPORT."""
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
           "--quiet", "--disable-pip-version-check", "--retries", "2", "--timeout", "30",
           "--report", str(report), "--target", str(scratch_target), "--index-url", indexes[0]]
    for url in indexes[1:]:
        cmd += ["--extra-index-url", url]
    if any(links.iterdir()):
        cmd += ["--find-links", str(links)]
    cmd += pip_target_args(platform)
    if any(p.pre for p in pins):
        cmd.append("--pre")  # a pin that follows a nightly channel takes the newest dev build
    return cmd + [p.requirement for p in pins]


def _run_pip(cmd: list[str], platform: Platform) -> None:
    """Run pip; its failure sorted into the network's (an index did not answer) and the profile's (nothing satisfies it)."""
    # --isolated drops the user's configuration and PIP_* variables, but not the site-wide files
    # (/etc/pip.conf, /etc/xdg/pip): a constraint there would cap the lock. os.devnull drops them all.
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    if proc.returncode == 0:
        return
    tail = _last_error(proc.stderr)
    if re.search(r"(NewConnectionError|ConnectionError|Max retries exceeded|Could not fetch URL|timed out)", proc.stderr):
        raise NetworkError(f"a package index did not answer during resolution: {tail}", "check the indexes and the network")
    raise ResolutionError(f"no set of wheels for Python {platform.python} on manylinux {platform.glibc} satisfies the profile: {tail}",
                          "relax or fix the requirements in the profile")


@dataclass(frozen=True)
class _Picked:
    wheel: Wheel
    requires: list[Requirement]  # its Requires-Dist, parsed once (the extras walk reads them often)
    extras: frozenset[str]  # the extras it was asked for directly


def _picked(items: list[dict[str, Any]], pins: list[Pin]) -> dict[str, _Picked]:
    """What pip's report says it would install: each wheel's file, hash and requirements."""
    out = {}
    for item in items:
        meta, info = item["metadata"], item["download_info"]
        name = canonicalize_name(meta["name"])
        url = info["url"]
        filename = unquote(Path(urlsplit(url).path).name)
        sha = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        pin = next((p for p in pins if p.name == name), None)
        if url.startswith("file:"):
            if not (pin and pin.wheel):
                raise ResolutionError(f"{name} resolved to a local file {url} that the profile does not pin")
            url, sha = None, pin.sha256
        if not sha:
            raise ResolutionError(f"the index gave no sha256 for {filename}", "use an index that publishes hashes")
        out[name] = _Picked(Wheel(name=name, version=meta["version"], filename=filename, sha256=sha, url=url, stage=""),
                            [Requirement(r) for r in meta.get("requires_dist") or []], frozenset(item.get("requested_extras") or []))
    return out


def _spread_extras(picked: dict[str, _Picked], env: dict[str, str]) -> dict[str, set[str]]:
    """Each package's extras. They come from whoever asks for it (torch asks for cuda-toolkit[cudart, ...]), and pip's
    report records them only for what was requested directly: gathered along the graph until nothing moves."""
    extras = {name: set(p.extras) for name, p in picked.items()}
    for _ in range(len(picked) + 1):
        moved = False
        for name, p in picked.items():
            for req in _edges(p.requires, env, extras[name]):
                dep = canonicalize_name(req.name)
                if dep in extras and not req.extras <= extras[dep]:
                    extras[dep] |= req.extras
                    moved = True
        if not moved:
            break
    return extras


def _unmet(picked: dict[str, _Picked], env: dict[str, str], extras: dict[str, set[str]]) -> list[Requirement]:
    """The requirements that apply on the image's platform which pip did not pick, or picked at a version they exclude
    (without their markers: to be asked for by name)."""
    missing: dict[str, Requirement] = {}
    for name, p in picked.items():
        for req in _edges(p.requires, env, extras[name]):
            dep = picked.get(canonicalize_name(req.name))
            if dep is None or not req.specifier.contains(dep.wheel.version, prereleases=True):
                bare = Requirement(str(req))
                bare.marker = None
                missing.setdefault(canonicalize_name(req.name), bare)
    return list(missing.values())


def _edges(requires: list[Requirement], env: dict[str, str], extras: set[str]) -> list[Requirement]:
    """The requirements that apply on the image's platform, with EXTRAS of the package asked for."""
    out = []
    for req in requires:
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in (extras | {""})):
            out.append(req)
    return out


def _assign_stages(target: Target, wheels: dict[str, Wheel], platform: Platform) -> list[Wheel]:
    """Give each wheel to the first stage whose requirements pull it in.

    So torch's whole closure lands in the torch stage, and a change to a later pin
    leaves the earlier stages (and their cached images) alone.
    """
    assigned: dict[str, str] = {}
    for stage in target.stages:
        todo = [p.name for p in stage.requires]
        while todo:
            name = todo.pop()
            if name in assigned or name not in wheels:
                continue
            assigned[name] = stage.name
            todo.extend(wheels[name].requires)
    missing = {d for w in wheels.values() for d in w.requires} - set(wheels)
    if missing:
        raise ResolutionError(
            f"for Python {platform.python} the graph needs {', '.join(sorted(missing))}, which pip did not pick "
            f"(pip evaluates markers with this machine's Python {sys.version.split()[0]})",
            f"run sglbuild with Python {platform.python_short}",
        )
    stray = set(wheels) - set(assigned)
    if stray:
        raise ResolutionError(
            f"pip picked {', '.join(sorted(stray))}, which nothing needs on Python {platform.python} "
            f"(pip evaluates markers with this machine's Python {sys.version.split()[0]})",
            f"run sglbuild with Python {platform.python_short}",
        )
    return [replace(wheels[name], stage=stage) for name, stage in assigned.items()]


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR", "E:"))]
    return (errors or lines or ["(no output)"])[-1][:300]
