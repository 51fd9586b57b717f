"""Step 1, profile: read ``sglbuild.toml`` into typed, validated image targets.

Every error names the file, the key and, where the text shows it, the line.
"""

from __future__ import annotations

import functools

import hashlib
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..contracts import AOT_BUILD_PLATFORM, DEFAULT_PLATFORM, GNU_TRIPLETS, PLATFORMS, RESERVED_STAGE_NAMES
from ..errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_PROFILE = "sglbuild.toml"
_DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_ARCH = re.compile(r"^sm_\d+[af]?$")
_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Pin:
    """One requirement of a stage and where its distribution must come from.

    ``index`` names an extra package index (e.g. PyTorch's nightly index);
    ``wheel``/``sha256`` name a prebuilt wheel placed in the wheelhouse by hand.
    """

    requirement: str
    index: str | None = None
    wheel: str | None = None
    sha256: str | None = None
    pre: bool = False  # follow a nightly channel: pre-releases (dev builds) count as newest

    @property
    def name(self) -> str:
        return canonicalize_name(Requirement(self.requirement).name)


@dataclass(frozen=True)
class Stage:
    name: str
    requires: tuple[Pin, ...]
    # Debian packages the stage installs over the base (locked by file and sha256, like the base's), e.g. the C++
    # compiler FlashInfer's JIT needs: a stage of their own keeps base and system shared with other targets.
    debian: tuple[str, ...] = ()
    # Where the stage lays out a CUDA toolkit made of the venv's NVIDIA wheels (bin, include, lib64, lib64/stubs),
    # set as CUDA_HOME: the layout JIT compilers (FlashInfer's) expect of a CUDA install.
    cuda_home: str | None = None


@dataclass(frozen=True)
class Base:
    """Either a Debian root filesystem made by mmdebstrap, or a registry image by digest."""

    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = ()
    source_date_epoch: int = 0
    image: str | None = None
    python: str | None = None  # only for a registry base; a Debian base's comes from the lock
    glibc: str = "2.17"  # only for a registry base: the manylinux level its wheels may need

    @property
    def bootstrapped(self) -> bool:
        return self.image is None


@dataclass(frozen=True)
class Serve:
    """Serving defaults as settings; :mod:`builder.inputs.serving` turns them into SGLang flags.

    ``derived``: the settings are not written here but chosen at build time from the image's
    evidence (:func:`builder.check.features.derive`): the fastest configuration proven for gpu_arch.
    """

    cuda_graph: bool = True
    custom_all_reduce: bool = True
    flashinfer: bool = True
    radix_cache: bool = True
    attention_backend: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    derived: bool = False


# Presets for [serve]: the field report's five flags (every accelerator off), and evidence.
COMPAT = Serve(cuda_graph=False, custom_all_reduce=False, flashinfer=False, radix_cache=False, attention_backend="torch_native")
SERVE_PRESETS = {"compat": COMPAT, "derived": Serve(derived=True)}


# FlashInfer's ahead-of-time modules: what a profile may declare (the names FlashInfer's own module generators take).
AOT_MODULES = ("decode", "prefill", "page", "sampling")  # batch decode, FA2 batch prefill (paged and ragged), KV append, sampling
AOT_DTYPES = ("bf16", "fp16")
AOT_KV_DTYPES = ("bf16", "fp16", "fp8_e4m3", "fp8_e5m2")
AOT_HEAD_DIMS = (64, 128, 256)


@dataclass(frozen=True)
class FlashInferAot:
    """[flashinfer_aot]: the FlashInfer modules built into the image ahead of time, for each architecture of each
    platform listed (an unlisted platform's image compiles them at first use, and verify says so)."""

    modules: tuple[str, ...] = ("decode", "prefill", "page", "sampling")
    dtype: str = "bf16"  # of queries and outputs (the model's activations)
    kv_dtypes: tuple[str, ...] = ("bf16", "fp8_e4m3")  # of the KV cache (--kv-cache-dtype auto / fp8_e4m3)
    head_dims: tuple[int, ...] = (64, 128, 256)
    platforms: tuple[str, ...] = ()  # () = every platform of the target

    def covers(self, platform: str) -> bool:
        return not self.platforms or platform in self.platforms

    def to_json(self) -> str:
        """The declaration as the image's label carries it (what verify asks the image's FlashInfer to resolve)."""
        return json.dumps({"modules": list(self.modules), "dtype": self.dtype, "kv_dtypes": list(self.kv_dtypes),
                           "head_dims": list(self.head_dims)}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    image: str
    tag: str
    # Each platform the target's image is built for, with the GPU architectures that image must serve. A target
    # without [platforms] is linux/amd64 for its one gpu_arch (and its lock keeps the single-platform format).
    platforms: tuple[tuple[str, tuple[str, ...]], ...]
    source: str
    base: Base
    index: str
    tools: tuple[Pin, ...]
    compile_bytecode: bool
    stages: tuple[Stage, ...]
    serve: Serve | None
    smoke: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    require_native: tuple[str, ...] = ()  # globs under site-packages that must carry SASS for gpu_arch
    post_install: tuple[str, ...] = ()  # shell commands at the end of the final stage
    # Library globs (under site-packages) whose system libraries the image does not carry, and why: verify
    # reports them instead of failing. For optional backends a package ships, e.g. torchcodec's FFmpeg 4-7 cores.
    unloadable: tuple[tuple[str, str], ...] = ()
    flashinfer_aot: FlashInferAot | None = None

    declares_platforms: bool = False  # [platforms] in the profile: a multi-platform lock and per-platform tags

    @property
    def human_tag(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def platform_names(self) -> list[str]:
        return [p for p, _ in self.platforms]

    def archs(self, platform: str | None = None) -> tuple[str, ...]:
        """The GPU architectures PLATFORM's image must serve (the first platform's when None)."""
        table = dict(self.platforms)
        return table[platform or self.platforms[0][0]]

    def aot_cross_platforms(self) -> tuple[str, ...]:
        """The platforms whose FlashInfer modules are cross-compiled on AOT_BUILD_PLATFORM (no compiler under emulation)."""
        if self.flashinfer_aot is None:
            return ()
        return tuple(p for p in self.platform_names if p != AOT_BUILD_PLATFORM and self.flashinfer_aot.covers(p))

    def aot_cross_compilers(self) -> tuple[str, ...]:
        """Debian's cross C++ compilers those need, installed over AOT_BUILD_PLATFORM's toolchain (locked there)."""
        return tuple(f"g++-{GNU_TRIPLETS[p]}" for p in self.aot_cross_platforms())

    @property
    def gpu_arch(self) -> str:
        """The first platform's architectures, as the image's label spells them (sm_100,sm_120)."""
        return ",".join(self.archs())

    def platform_tag(self, platform: str) -> str:
        """IMAGE:TAG for a single-platform target; IMAGE:TAG-ARCH (sglang:blackwell-arm64) for each platform of a multi-platform one."""
        if not self.declares_platforms:
            return self.human_tag
        return f"{self.human_tag}-{PLATFORMS[platform][2]}"

    def pins(self) -> list[Pin]:
        return [*self.tools, *(p for s in self.stages for p in s.requires)]

    def resolution_inputs(self) -> dict[str, Any]:
        """What the lock depends on; serving flags, tags and smoke tests do not count (nor GPU architectures)."""
        base = asdict(self.base)
        inputs = {
            "base": base,
            "index": self.index,
            "tools": [asdict(p) for p in self.tools],
            # A stage's Debian packages only where it has some: other targets keep their inputs digest.
            "stages": [{"name": s.name, "requires": [asdict(p) for p in s.requires], **({"debian": list(s.debian)} if s.debian else {})}
                       for s in self.stages],
        }
        if self.declares_platforms:  # only where declared: other targets keep their inputs digest, so their locks
            inputs["platforms"] = self.platform_names
        if self.aot_cross_compilers():  # likewise: only where FlashInfer's modules are cross-compiled
            inputs["aot_cross"] = list(self.aot_cross_compilers())
        return inputs

    def inputs_digest(self) -> str:
        blob = json.dumps(self.resolution_inputs(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Profile:
    path: Path
    default_target: str
    targets: dict[str, Target] = field(default_factory=dict)

    def target(self, name: str | None) -> Target:
        name = name or self.default_target
        if name not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none"
            raise ProfileError(f"{self.path}: no target named {name!r}", f"targets: {known}")
        return self.targets[name]

    @property
    def root(self) -> Path:
        return self.path.parent

    @functools.cached_property
    def revision(self) -> str:
        """The git revision of the profile's checkout ("-dirty" with uncommitted changes; "unknown" outside git); asked of
        git once per run."""
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True, check=True).stdout.strip()

        try:
            head = git("rev-parse", "HEAD")
            dirty = git("status", "--porcelain", "--untracked-files=no")
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        return head + ("-dirty" if dirty else "")


class _Reader:
    """Typed access to one TOML table, with errors that name file, key and line."""

    def __init__(self, path: Path, text: str, table: dict[str, Any], where: str) -> None:
        self.path, self.text, self.table, self.where = path, text, table, where

    def fail(self, key: str, problem: str) -> ProfileError:
        dotted = f"{self.where}.{key}" if self.where else key
        line = _line_of(self.text, self.where, key)
        at = f"{self.path}:{line}" if line else str(self.path)
        return ProfileError(f"{at}: {dotted}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        if key not in self.table:
            if required or default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be {_article(names)}, not {type(value).__name__}")
        return value

    def sub(self, key: str, default: dict | None = None) -> "_Reader":
        value = self.get(key, dict, {} if default is None else default)
        return _Reader(self.path, self.text, value, f"{self.where}.{key}" if self.where else key)

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, f"unknown key (known: {', '.join(sorted(allowed))})")


def _line_of(text: str, where: str, key: str) -> int | None:
    """Best-effort line number of ``key`` inside the table ``where`` (for messages only)."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\[?\s*" + re.escape(where).replace(r"\.", r"\s*\.\s*") + r"\s*\]\]?\s*$") if where else None
    start = 0
    if header:
        for i, line in enumerate(lines):
            if header.match(line):
                start = i
                break
    pattern = re.compile(r"^\s*\"?" + re.escape(key) + r"\"?\s*=")
    for i in range(start, len(lines)):
        if pattern.match(lines[i]):
            return i + 1
    return start + 1 if header else None


def load_profile(path: str | Path = DEFAULT_PROFILE) -> Profile:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProfileError(f"{path}: profile not found", "run from the project root or pass --profile") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    top = _Reader(path, text, data, "")
    top.check_keys({"default_target", "targets"})
    targets_r = top.sub("targets")
    if not targets_r.table:
        raise top.fail("targets", "declares no target")
    profile = Profile(path=path.resolve(), default_target=top.get("default_target", str, required=True))
    for name in targets_r.table:
        profile.targets[name] = _parse_target(name, targets_r.sub(name))
    if profile.default_target not in profile.targets:
        raise top.fail("default_target", f"names {profile.default_target!r}, which is not a target")
    return profile


def _parse_pin(r: _Reader, key: str, raw: Any) -> Pin:
    if isinstance(raw, str):
        pin = Pin(requirement=raw)
    elif isinstance(raw, dict):
        sub = _Reader(r.path, r.text, raw, r.where)
        sub.check_keys({"requirement", "index", "wheel", "sha256", "pre"})
        pin = Pin(
            requirement=sub.get("requirement", str, required=True),
            index=sub.get("index", str, None),
            wheel=sub.get("wheel", str, None),
            sha256=sub.get("sha256", str, None),
            pre=sub.get("pre", bool, False),
        )
    else:
        raise r.fail(key, f"each requirement must be a string or a table, not {type(raw).__name__}")
    try:
        req = Requirement(pin.requirement)
    except InvalidRequirement as exc:
        raise r.fail(key, f"{pin.requirement!r} is not a valid requirement: {exc}") from None
    if pin.wheel is not None:
        if pin.index is not None:
            raise r.fail(key, f"{req.name}: give either 'wheel' or 'index', not both")
        if pin.sha256 is None or not _SHA256.match(pin.sha256):
            raise r.fail(key, f"{req.name}: a prebuilt wheel needs 'sha256' (64 lowercase hex digits)")
        if "/" in pin.wheel or not pin.wheel.endswith(".whl"):
            raise r.fail(key, f"{req.name}: 'wheel' is a file name in wheels/, ending in .whl")
        if len(req.specifier) != 1 or next(iter(req.specifier)).operator != "==":
            raise r.fail(key, f"{req.name}: a prebuilt wheel is pinned with '==VERSION'")
    elif pin.sha256 is not None:
        raise r.fail(key, f"{req.name}: 'sha256' goes with 'wheel'")
    return pin


def _parse_target(name: str, r: _Reader) -> Target:
    """One [targets.NAME] table, part by part: identity, base, Python, stages, serving, checks, environment."""
    if not _NAME.match(name):
        raise r.fail("", f"target name {name!r} must be lowercase letters, digits, '.', '_' or '-'")
    r.check_keys({"description", "image", "tag", "gpu_arch", "platforms", "source", "base", "python", "stage", "serve", "smoke",
                  "env", "require_native", "post_install", "unloadable", "flashinfer_aot"})
    platforms = _parse_platforms(r)
    python = r.sub("python")
    python.check_keys({"index", "tools", "compile_bytecode"})
    checks = _parse_checks(r)
    return Target(
        name=name,
        description=r.get("description", str, ""),
        image=r.get("image", str, required=True),
        tag=r.get("tag", str, name),
        platforms=platforms,
        declares_platforms="platforms" in r.table,
        source=r.get("source", str, ""),
        base=_parse_base(r.sub("base")),
        index=python.get("index", str, "https://pypi.org/simple"),
        tools=_parse_tools(python),
        compile_bytecode=python.get("compile_bytecode", bool, False),
        stages=_parse_stages(r),
        serve=_parse_serve(r.sub("serve")) if "serve" in r.table else None,
        env=_parse_env(r),
        flashinfer_aot=_parse_aot(r.sub("flashinfer_aot"), [p for p, _ in platforms]) if "flashinfer_aot" in r.table else None,
        **checks,
    )


def _parse_aot(r: _Reader, platforms: list[str]) -> FlashInferAot:
    """[flashinfer_aot]: each list drawn from what FlashInfer's generators take; the platforms from the target's own."""
    r.check_keys({"modules", "dtype", "kv_dtypes", "head_dims", "platforms"})
    default = FlashInferAot()

    def listed(key: str, allowed: tuple, start: tuple) -> tuple:
        value = r.get(key, list, list(start))
        if not value or any(isinstance(v, bool) or v not in allowed for v in value) or len(set(value)) != len(value):
            raise r.fail(key, f"must be a list of distinct values from {', '.join(map(str, allowed))}")
        return tuple(value)

    dtype = r.get("dtype", str, default.dtype)
    if dtype not in AOT_DTYPES:
        raise r.fail("dtype", f"{dtype!r}: one of {', '.join(AOT_DTYPES)}")
    covered = listed("platforms", tuple(platforms), tuple(platforms))
    if AOT_BUILD_PLATFORM not in platforms and covered:  # every platform's modules compile there (its toolchain stage)
        raise r.fail("platforms", f"FlashInfer's modules compile on {AOT_BUILD_PLATFORM}, which this target does not build: "
                                  f"add it to [platforms], or drop [flashinfer_aot]")
    return FlashInferAot(modules=listed("modules", AOT_MODULES, default.modules), dtype=dtype,
                         kv_dtypes=listed("kv_dtypes", AOT_KV_DTYPES, default.kv_dtypes),
                         head_dims=listed("head_dims", AOT_HEAD_DIMS, default.head_dims), platforms=covered)


def _parse_platforms(r: _Reader) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """gpu_arch = "sm_120" (linux/amd64), or [platforms] "linux/arm64" = ["sm_100", "sm_121"], ... (not both)."""
    if "platforms" not in r.table:
        arch = r.get("gpu_arch", str, required=True)
        if not _ARCH.match(arch):
            raise r.fail("gpu_arch", f"{arch!r} is not an architecture like 'sm_120'")
        return ((DEFAULT_PLATFORM, (arch,)),)
    if "gpu_arch" in r.table:
        raise r.fail("gpu_arch", "give either gpu_arch (one linux/amd64 image) or [platforms] (an architecture list per platform)")
    table = r.get("platforms", dict)
    if not table:
        raise r.fail("platforms", "declares no platform")
    out = []
    for platform, archs in table.items():
        if platform not in PLATFORMS:
            raise r.fail("platforms", f"{platform!r} is not a platform sglbuild builds ({', '.join(PLATFORMS)})")
        if not isinstance(archs, list) or not archs or not all(isinstance(a, str) and _ARCH.match(a) for a in archs):
            raise r.fail("platforms", f"{platform}: give the GPU architectures its image must serve, e.g. [\"sm_100\", \"sm_121\"]")
        out.append((platform, tuple(dict.fromkeys(archs))))
    return tuple(out)


def _parse_base(b: _Reader) -> Base:
    """[base]: a Debian root filesystem by mmdebstrap, or a registry image by digest."""
    b.check_keys({"suite", "mirror", "packages", "source_date_epoch", "image", "python", "glibc"})
    image = b.get("image", str, None)
    if image is not None and not _DIGEST_REF.match(image):
        raise b.fail("image", f"{image!r} must be pinned by digest: NAME@sha256:<64 hex digits>")
    packages = b.get("packages", list, [])
    if not all(isinstance(p, str) and p for p in packages):
        raise b.fail("packages", "must be a list of Debian package names")
    epoch = b.get("source_date_epoch", int, required=True)
    if epoch < 0:
        raise b.fail("source_date_epoch", "must be a Unix time (seconds, >= 0)")
    base = Base(suite=b.get("suite", str, "bookworm"), mirror=b.get("mirror", str, "http://deb.debian.org/debian"),
                packages=tuple(packages), source_date_epoch=epoch, image=image, python=b.get("python", str, None),
                glibc=b.get("glibc", str, "2.17"))
    if image is not None and base.python is None:
        raise b.fail("python", "a registry base must say its CPython version, e.g. '3.11'")
    return base


def _parse_tools(p: _Reader) -> tuple[Pin, ...]:
    tools = tuple(_parse_pin(p, "tools", x) for x in p.get("tools", list, []))
    if any(t.name != "uv" for t in tools):
        raise p.fail("tools", "the build's only tool is the installer, uv (e.g. tools = [\"uv==0.13.9\"])")
    return tools


def _parse_stages(r: _Reader) -> tuple[Stage, ...]:
    """[[stage]]: named, in order, each with its requirements, Debian packages or both."""
    stages: list[Stage] = []
    seen: set[str] = set()
    for raw in r.get("stage", list, required=True):
        if not isinstance(raw, dict):
            raise r.fail("stage", "each [[stage]] must be a table")
        s = _Reader(r.path, r.text, raw, f"{r.where}.stage")
        s.check_keys({"name", "requires", "debian", "cuda_home"})
        sname = s.get("name", str, required=True)
        if sname in RESERVED_STAGE_NAMES:
            raise s.fail("name", f"stage name {sname!r} is sglbuild's own ({', '.join(sorted(RESERVED_STAGE_NAMES))} are reserved)")
        if not _NAME.match(sname) or sname in seen:
            raise s.fail("name", f"stage name {sname!r} is repeated or not lowercase letters, digits, '.', '_' or '-'")
        seen.add(sname)
        reqs = tuple(_parse_pin(s, "requires", x) for x in s.get("requires", list, ()))
        debian = tuple(s.get("debian", list, ()))
        if any(not isinstance(d, str) or not _DEB_NAME.match(d) for d in debian):
            raise s.fail("debian", "each Debian package is a name (lowercase letters, digits, '+', '-', '.')")
        cuda_home = s.get("cuda_home", str, None)
        if cuda_home is not None and (not cuda_home.startswith("/") or cuda_home.rstrip("/") in ("", "/usr", "/opt/venv")):
            raise s.fail("cuda_home", f"{cuda_home!r} is not a directory of its own (e.g. /opt/cuda)")
        if not reqs and not debian and cuda_home is None:
            raise s.fail("requires", "lists no requirement (nor debian packages, nor a cuda_home)")
        stages.append(Stage(sname, reqs, debian, cuda_home))
    return tuple(stages)


_SERVE_SETTINGS = ("cuda_graph", "custom_all_reduce", "flashinfer", "radix_cache", "attention_backend")


def _parse_serve(v: _Reader) -> Serve:
    """[serve]: a preset, settings over it, the address."""
    v.check_keys({"preset", *_SERVE_SETTINGS, "host", "port"})
    preset = v.get("preset", str, None)
    if preset is not None and preset not in SERVE_PRESETS:
        raise v.fail("preset", f"{preset!r} is not a preset ({', '.join(SERVE_PRESETS)})")
    start = SERVE_PRESETS[preset] if preset else Serve()
    if start.derived and any(k in v.table for k in _SERVE_SETTINGS):
        raise v.fail("preset", "'derived' settings come from the image's evidence: drop " + ", ".join(k for k in _SERVE_SETTINGS if k in v.table))
    serve = Serve(
        cuda_graph=v.get("cuda_graph", bool, start.cuda_graph),
        custom_all_reduce=v.get("custom_all_reduce", bool, start.custom_all_reduce),
        flashinfer=v.get("flashinfer", bool, start.flashinfer),
        radix_cache=v.get("radix_cache", bool, start.radix_cache),
        attention_backend=v.get("attention_backend", str, start.attention_backend),
        host=v.get("host", str, "0.0.0.0"),
        port=v.get("port", int, 8000),
        derived=start.derived,
    )
    if not serve.flashinfer and serve.attention_backend in (None, "flashinfer"):
        raise v.fail("attention_backend", "flashinfer = false needs another attention backend, e.g. 'torch_native'")
    return serve


def _parse_checks(r: _Reader) -> dict[str, tuple]:
    """What the image is checked for and finished with: smoke tests, native libraries, declared unloadables, post_install."""
    smoke = r.get("smoke", list, [])
    if not all(isinstance(c, str) for c in smoke):
        raise r.fail("smoke", "must be a list of shell commands")
    require_native = r.get("require_native", list, [])
    if not all(isinstance(g, str) and g and not g.startswith("/") for g in require_native):
        raise r.fail("require_native", "must be a list of globs relative to site-packages")
    unloadable = r.get("unloadable", dict, {})
    for glob_, why in unloadable.items():
        if not glob_ or glob_.startswith("/") or not isinstance(why, str) or not why.strip():
            raise r.fail("unloadable", f"{glob_!r}: give a glob relative to site-packages and, as its value, why it may not load")
    post_install = r.get("post_install", list, [])
    if not all(isinstance(c, str) and c.strip() and "\n" not in c for c in post_install):
        raise r.fail("post_install", "must be a list of one-line shell commands")
    return {"smoke": tuple(smoke), "require_native": tuple(require_native), "unloadable": tuple(sorted(unloadable.items())),
            "post_install": tuple(post_install)}


def _parse_env(r: _Reader) -> tuple[tuple[str, str], ...]:
    env = r.get("env", dict, {})
    for k, v in env.items():
        if not _ENV_NAME.match(k):
            raise r.fail("env", f"{k!r} is not a variable name (letters, digits and '_', not starting with a digit)")
        if not isinstance(v, str) or any(c in v for c in "\n\r\0"):
            raise r.fail("env", f"{k}: the value must be a string on one line (a Dockerfile ENV cannot hold a newline)")
    return tuple(sorted(env.items()))


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun
