"""The server container: one description of a served model, which ``serve`` prints and runs and verify's GPU check starts.

The server gets the image's default flags (an sglbuild image's label, or the flags in a
hand-made image's ENTRYPOINT/CMD), the model, and a preset's model-specific flags from the
field report, with ``python -m sglang.launch_server`` and every flag spelled out. What
``serve --dry-run`` prints is made from the very arguments the engine is given
(:meth:`ServerContainer.run_kwargs`), so the two cannot differ.

The server is published on 127.0.0.1 unless the user asks for a public address; a public
server always gets SGLang's ``--api-key``. The Hugging Face cache mounted into it is the one
doctor checks (:func:`hf_cache`), and its shared memory the one doctor checks for. Any other
SGLang flag the user gives comes after the preset's; serve owns the model, host, port and key.
What the server compiles at first use (FlashInfer's modules, Triton's and torch.compile's
kernels, DeepGEMM's, the driver's PTX JIT) goes to one named volume per image content
(:func:`cache_volume`), so a restarted server compiles nothing it compiled before.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckFailed, InputError
from ..contracts import CACHE_VARIABLES, CACHE_VOLUME_PREFIX, IN_CONTAINER_CACHE
from ..engine.records import ImageConfig, ImageRecord
from .command import DEFAULT_LAUNCHER, server_command

if TYPE_CHECKING:
    from ..engine import Engine

ALLOC_CONF = "expandable_segments:True"
LOOPBACK = "127.0.0.1"
IN_CONTAINER_HF_CACHE = "/root/.cache/huggingface"
SERVER_PORT = 8000  # what the image's entrypoint serves on (its default flags say --port 8000)
DEFAULT_SHM = "8g"


def hf_cache() -> Path:
    """The Hugging Face cache on this host: $HF_HOME, else ~/.cache/huggingface (mounted by serve, checked by doctor)."""
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def shm_bytes(size: str) -> int:
    """'8g' -> bytes, as docker reads --shm-size."""
    m = re.fullmatch(r"(\d+)([kmg]?)b?", size.strip().lower())
    if not m:
        raise InputError(f"{size!r} is not a size like 8g")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2)]


@dataclass(frozen=True)
class Preset:
    model: str
    port: int
    shm: str
    flags: tuple[str, ...]


# The two runs of the field report (memory fraction, total tokens, shared memory, host port).
PRESETS = {
    "tinyllama": Preset("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 30001, "8g", ("--mem-fraction-static", "0.15", "--max-total-tokens", "2048")),
    "qwen2.5-3b": Preset("Qwen/Qwen2.5-3B-Instruct", 30002, "16g", ("--mem-fraction-static", "0.25", "--max-total-tokens", "4096")),
}
COMMON_FLAGS = ("--trust-remote-code", "--log-level", "info")


@dataclass(frozen=True)
class ServerContainer:
    image: str
    model: str  # as the server sees it (a local directory is mounted at /model)
    model_dir: str | None
    port: int
    shm: str
    name: str | None
    flags: tuple[str, ...]  # after --model-path: the preset's and the common ones
    bind: str = LOOPBACK  # the host address the port is published on
    api_key: str | None = field(default=None, repr=False)
    defaults: tuple[str, ...] = ()  # the image's own default flags, first
    launcher: tuple[str, ...] = DEFAULT_LAUNCHER
    environment: tuple[tuple[str, str], ...] = ()
    cache: str = ""  # the host's Hugging Face cache, mounted into the container
    extra: tuple[str, ...] = ()  # the user's own SGLang flags, after the preset's
    cache_volume: str | None = None  # the named volume of the image's compile caches (None: none, compiled anew each start)

    @property
    def server_args(self) -> list[str]:
        """Every flag the server gets, in order: the image's defaults, the model, the preset's, the user's, the key."""
        return [*self.defaults, "--model-path", self.model, *self.flags, *self.extra, *(["--api-key", self.api_key] if self.api_key else [])]

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK if self.bind in ('0.0.0.0', '::') else self.bind}:{self.port}"

    def run_kwargs(self) -> dict[str, Any]:
        """What the engine is given to start it (``gpus``: every GPU, through the NVIDIA runtime)."""
        volumes = {self.cache_volume: {"bind": IN_CONTAINER_CACHE, "mode": "rw"}} if self.cache_volume else {}
        volumes[self.cache] = {"bind": IN_CONTAINER_HF_CACHE, "mode": "rw"}  # inside the cache volume's mount, the host's own
        if self.model_dir:
            volumes[self.model_dir] = {"bind": "/model", "mode": "ro"}
        environment = {**dict(self.environment), **(CACHE_VARIABLES if self.cache_volume else {})}
        return {"entrypoint": [self.launcher[0]], "command": [*self.launcher[1:], *self.server_args], "runtime": "nvidia",
                "gpus": True, "ports": {f"{SERVER_PORT}/tcp": (self.bind, self.port)}, "volumes": volumes,
                "environment": environment, "shm_size": self.shm, "name": self.name}

    def docker_run(self) -> list[str]:
        """The same container as a ``docker run`` command line, made from :meth:`run_kwargs`."""
        return docker_run_argv(self.image, self.run_kwargs())


def docker_run_argv(image: str, kw: dict[str, Any]) -> list[str]:
    """``docker run`` arguments for what :meth:`ServerContainer.run_kwargs` gives the engine."""
    argv = ["docker", "run", "--runtime", kw["runtime"]] + (["--gpus", "all"] if kw["gpus"] else [])
    for port, (bind, host_port) in kw["ports"].items():
        argv += ["-p", f"{bind}:{host_port}:{port.split('/')[0]}"]
    for source, mount in kw["volumes"].items():
        argv += ["-v", f"{source}:{mount['bind']}" + (":ro" if mount["mode"] == "ro" else "")]
    for key, value in kw["environment"].items():
        argv += ["-e", f"{key}={value}"]
    argv += ["--shm-size", kw["shm_size"]]
    if kw["name"]:
        argv += ["--name", kw["name"]]
    return [*argv, "--entrypoint", kw["entrypoint"][0], image, *kw["command"]]


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.path.exists(model)


# The flags serve sets itself: the model (--model), where the server listens (the image's --host and --port, published
# as --port and --public say) and the key (--api-key).
OWNED = {"--model-path": "--model", "--model": "--model", "--host": "--public", "--port": "--port", "--api-key": "--api-key"}


def server_container(image: str, config: ImageConfig, labels: dict[str, str], model: str | None, preset: str | None, port: int | None, *,
                     name: str | None = "", public: bool = False, api_key: str | None = None, extra: tuple[str, ...] = (),
                     cache_volume: str | None = None) -> ServerContainer:
    """The server IMAGE (its CONFIG and LABELS) runs; ``name`` None for an unnamed container, "" for one named after the model.
    EXTRA: the user's own SGLang flags; CACHE_VOLUME: the compile caches' volume."""
    owned = [f for f in extra if f.split("=", 1)[0] in OWNED]
    if owned:
        flag = owned[0].split("=", 1)[0]
        raise InputError(f"{flag} is serve's to set, not a flag to pass after --", f"use serve's {OWNED[flag]}")
    p = PRESETS.get(preset or "")
    if preset and p is None:
        raise InputError(f"no preset {preset!r}", f"presets: {', '.join(PRESETS)}")
    model = model or (p.model if p else None)
    if not model:
        raise InputError("no model: pass --model ID_OR_PATH or --preset", f"presets: {', '.join(PRESETS)}")
    model_dir = None
    if _looks_like_path(model):
        path = os.path.abspath(os.path.expanduser(model))
        if not os.path.isdir(path):
            raise InputError(f"model path {model} does not exist (or is not a directory)")
        model_dir, model = path, "/model"
    if name == "":
        name = "sglang-" + re.sub(r"[^a-z0-9]+", "-", (model_dir or model).rsplit("/", 1)[-1].lower()).strip("-")
    if public and not api_key:
        api_key = secrets.token_urlsafe(24)
    command = server_command(config, labels, None)
    if command.flags is None:
        raise InputError(f"{image} starts no SGLang server ({command.source})", "serve an image with SGLang's launch_server")
    return ServerContainer(image, model, model_dir, port or (p.port if p else 30000), p.shm if p else DEFAULT_SHM, name,
                           (*(p.flags if p else ()), *COMMON_FLAGS), "0.0.0.0" if public else LOOPBACK, api_key,
                           defaults=tuple(_without_model(command.flags)), launcher=command.launcher,
                           environment=_allocator_env(config), cache=str(hf_cache()), extra=tuple(extra), cache_volume=cache_volume)


def cache_volume(image: ImageRecord) -> str:
    """The compile caches' volume of IMAGE: named for its content (what a process in it sees), so another image, whose
    compiled modules may not fit it, never reads this one's."""
    return CACHE_VOLUME_PREFIX + image.content_key[:16]


def _without_model(flags: list[str]) -> list[str]:
    """The image's defaults minus a --model-path the hand-made command may carry (the description gives its own)."""
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag == "--model-path":
            skip = True
        elif not flag.startswith("--model-path="):
            out.append(flag)
    return out


def _allocator_env(config: ImageConfig) -> tuple[tuple[str, str], ...]:
    """The field report's allocator setting, unless the image sets one: torch 2.9 reads PYTORCH_ALLOC_CONF
    (and warns at every start for the old name); older torch reads only PYTORCH_CUDA_ALLOC_CONF."""
    names = set(config.environment)
    return () if names & {"PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"} else (("PYTORCH_CUDA_ALLOC_CONF", ALLOC_CONF),)


def start(engine: Engine, server: ServerContainer) -> str:
    """Start SERVER; its container's ID."""
    kw = server.run_kwargs()
    return engine.containers.start(server.image, kw.pop("command"), **kw).id


def wait_healthy(engine: Engine, container_id: str, server: ServerContainer, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.containers.status(container_id) == "exited":
            tail = engine.containers.logs(container_id, tail=5).strip().splitlines()
            raise CheckFailed(f"the server exited: {tail[-1] if tail else '(no output)'}")
        try:
            with urllib.request.urlopen(urllib.request.Request(server.url + "/health", headers=server.auth_header), timeout=5) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            time.sleep(2)
    raise CheckFailed(f"the server was not healthy within {timeout:.0f} s")
