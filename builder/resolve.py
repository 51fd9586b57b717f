"""Step 2, lock (resolution): pin every input for the image's platform, not the host's.

Debian packages are resolved by ``mmdebstrap --simulate`` against the profile's mirror.
Python distributions are resolved by pip in isolated mode (no host pip configuration)
with the image's CPython, ABI and manylinux tags; pip's JSON report gives each file's
URL and sha256, and the dependency graph is re-evaluated here with the image's markers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from .contracts import TOOLS
from .errors import IntegrityError, MissingFile, NetworkError, ResolutionError, ToolMissing
from .hashing import sha256_file
from .lock import Lock, Platform, Wheel
from .profile import Pin, Profile, Target

_INST = re.compile(r"^Inst (\S+) \((\S+) ")


def resolve(profile: Profile, target: Target, wheelhouse: Path) -> Lock:
    if target.base.bootstrapped:
        debian = resolve_debian(target)
        platform = platform_from_debian(debian)
    else:
        debian, platform = {}, Platform(python=target.base.python or "3.11", glibc=target.base.glibc)
    wheels = resolve_python(target, platform, wheelhouse)
    return Lock(
        target=target.name,
        inputs=target.inputs_digest(),
        platform=platform,
        debian=debian,
        wheels=wheels,
        base_image=target.base.image,
    )


def resolve_debian(target: Target) -> dict[str, str]:
    """Every package (and version) a bootstrap of the base would install today."""
    if shutil.which("mmdebstrap") is None:
        raise ToolMissing("mmdebstrap is not installed", "apt-get install mmdebstrap")
    base = target.base
    cmd = ["mmdebstrap", "-v", "--simulate", "--variant=minbase"]
    if base.packages:
        cmd.append("--include=" + ",".join(base.packages))
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
    return packages


def platform_from_debian(debian: dict[str, str]) -> Platform:
    py = [(n, v) for n, v in debian.items() if re.fullmatch(r"python3\.\d+", n)]
    if not py:
        raise ResolutionError("the base installs no CPython (python3.X)", "add python3 and python3-venv to [base] packages")
    if "libc6" not in debian:
        raise ResolutionError("the base has no libc6")
    upstream = lambda v: v.split(":")[-1].split("-")[0].split("+")[0]  # noqa: E731
    return Platform(python=upstream(py[0][1]), glibc=upstream(debian["libc6"]))


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
    indexes = [target.index] + sorted({p.index for p in pins if p.index})
    for url in indexes:
        _check_index(url, Requirement(pins[0].requirement).name)
    with tempfile.TemporaryDirectory(prefix="sglbuild-resolve-") as tmp:
        links = Path(tmp, "links")
        links.mkdir()
        _local_wheels(pins, wheelhouse, links)
        report = Path(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
               "--quiet", "--disable-pip-version-check", "--retries", "2", "--timeout", "30",
               "--report", str(report), "--target", str(Path(tmp, "t")), "--index-url", indexes[0]]
        for url in indexes[1:]:
            cmd += ["--extra-index-url", url]
        if any(links.iterdir()):
            cmd += ["--find-links", str(links)]
        cmd += pip_target_args(platform)
        if any(p.pre for p in pins):
            cmd.append("--pre")  # a pin that follows a nightly channel takes the newest dev build
        cmd += [p.requirement for p in pins]
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = _last_error(proc.stderr)
            if re.search(r"(NewConnectionError|ConnectionError|Max retries exceeded|Could not fetch URL|timed out)", proc.stderr):
                raise NetworkError(f"a package index did not answer during resolution: {tail}", "check the indexes and the network")
            raise ResolutionError(f"no set of wheels for Python {platform.python} on manylinux {platform.glibc} satisfies the profile: {tail}",
                                  "relax or fix the requirements in the profile")
        items = json.loads(report.read_text())["install"]
        wheels: dict[str, Wheel] = {}
        env = target_environment(platform)
        for item in items:
            meta = item["metadata"]
            name = canonicalize_name(meta["name"])
            info = item["download_info"]
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
            extras = set(item.get("requested_extras") or [])
            wheels[name] = Wheel(
                name=name,
                version=meta["version"],
                filename=filename,
                sha256=sha,
                url=url,
                stage="",
                requires=tuple(sorted(_deps(meta.get("requires_dist") or [], env, extras))),
            )
        return wheels


def _deps(requires_dist: list[str], env: dict[str, str], extras: set[str]) -> set[str]:
    out: set[str] = set()
    for spec in requires_dist:
        req = Requirement(spec)
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
            out.add(canonicalize_name(req.name))
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
