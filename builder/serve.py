"""``sglbuild serve``: run an image's server the way the field report did, with flags it accepts.

The server gets the image's default flags (an sglbuild image's label, or the flags in a
hand-made image's ENTRYPOINT/CMD) and a preset's model-specific ones from the field report.
``serve`` starts ``python -m sglang.launch_server`` with all of them spelled out, so
``--dry-run`` prints every flag the server will get, after the image's own SGLang has parsed
them.

The server is published on 127.0.0.1 unless the user asks for a public address; a public
server always gets SGLang's ``--api-key`` (generated and printed once when none is given),
so no open LLM endpoint lands on the user's network by default.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .command import server_command
from .contracts import Outcome
from .doctor import doctor
from .errors import CheckFailed, InputError, NotReady

if TYPE_CHECKING:
    from .engine import Engine

HF_CACHE = "~/.cache/huggingface"
ALLOC_CONF = "expandable_segments:True"
LOOPBACK = "127.0.0.1"


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
class ServePlan:
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
    launcher: tuple[str, ...] = ("python", "-m", "sglang.launch_server")
    environment: tuple[tuple[str, str], ...] = ()

    @property
    def server_args(self) -> list[str]:
        """Every flag the server gets, in order: the image's defaults, the model, the preset's, the key."""
        return [*self.defaults, "--model-path", self.model, *self.flags, *(["--api-key", self.api_key] if self.api_key else [])]

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK if self.bind in ('0.0.0.0', '::') else self.bind}:{self.port}"

    def docker_run(self) -> list[str]:
        cmd = ["docker", "run", "--rm", "--runtime", "nvidia", "--gpus", "all", "-p", f"{self.bind}:{self.port}:8000",
               "-v", f"{os.path.expanduser(HF_CACHE)}:/root/.cache/huggingface"]
        if self.model_dir:
            cmd += ["-v", f"{self.model_dir}:/model:ro"]
        for key, value in self.environment:
            cmd += ["-e", f"{key}={value}"]
        cmd += ["--shm-size", self.shm]
        if self.name:
            cmd += ["--name", self.name]
        return [*cmd, "--entrypoint", self.launcher[0], self.image, *self.launcher[1:], *self.server_args]


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.path.exists(model)


def plan_serve(image: str, config: dict, labels: dict[str, str], model: str | None, preset: str | None, port: int | None, *,
               name: str | None = "", public: bool = False, api_key: str | None = None) -> ServePlan:
    """What ``serve`` will run from IMAGE (its CONFIG and LABELS); ``name`` None for an unnamed container,
    "" for one named after the model."""
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
    return ServePlan(image, model, model_dir, port or (p.port if p else 30000), p.shm if p else "8g", name,
                     (*(p.flags if p else ()), *COMMON_FLAGS), "0.0.0.0" if public else LOOPBACK, api_key,
                     defaults=tuple(_without_model(command.flags)), launcher=command.launcher, environment=_allocator_env(config))


def _without_model(flags: list[str]) -> list[str]:
    """The image's defaults minus a --model-path the hand-made command may carry (the plan gives its own)."""
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag == "--model-path":
            skip = True
        elif not flag.startswith("--model-path="):
            out.append(flag)
    return out


def _allocator_env(config: dict) -> tuple[tuple[str, str], ...]:
    """The field report's allocator setting, unless the image sets one: torch 2.9 reads PYTORCH_ALLOC_CONF
    (and warns at every start for the old name); older torch reads only PYTORCH_CUDA_ALLOC_CONF."""
    names = {e.split("=", 1)[0] for e in config.get("Env") or []}
    return () if names & {"PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"} else (("PYTORCH_CUDA_ALLOC_CONF", ALLOC_CONF),)


def check_flags(engine: Engine, p: ServePlan) -> None:
    """Every flag the server will get, parsed by the image's own SGLang."""
    outcome = Outcome.from_dict(engine.containers.probe(p.image, ["flags", json.dumps(p.server_args)]))
    if not outcome.ok:
        raise CheckFailed(f"the SGLang in {p.image} rejects the server flags: {outcome.error}")


def port_free(bind: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((bind, port))
        except OSError:
            return False
    return True


def start(engine: Engine, p: ServePlan) -> Any:
    volumes = {os.path.expanduser(HF_CACHE): {"bind": "/root/.cache/huggingface", "mode": "rw"}}
    if p.model_dir:
        volumes[p.model_dir] = {"bind": "/model", "mode": "ro"}
    return engine.containers.serve(p.image, [*p.launcher[1:], *p.server_args], entrypoint=[p.launcher[0]], name=p.name,
                                   shm=p.shm, ports={"8000/tcp": (p.bind, p.port)}, volumes=volumes,
                                   environment=dict(p.environment))


def wait_healthy(container: Any, url: str, api_key: str | None = None, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            tail = container.logs(tail=5).decode(errors="replace").strip().splitlines()
            raise CheckFailed(f"the server exited: {tail[-1] if tail else '(no output)'}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/health", headers=headers), timeout=5) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            time.sleep(2)
    raise CheckFailed(f"the server was not healthy within {timeout:.0f} s")


def dry_run_text(p: ServePlan) -> str:
    return shlex.join(p.docker_run()) + "\n"


def serve(engine: Engine, image_ref: str, *, model: str | None, preset: str | None, port: int | None, public: bool,
          api_key: str | None, dry_run: bool, say: Any) -> str:
    """Plan, check, then print (dry run) or start the server and wait for it; returns what to print on stdout."""
    image = engine.images.get(image_ref)
    p = plan_serve(image_ref, image.attrs.get("Config") or {}, image.labels or {}, model, preset, port, public=public, api_key=api_key)
    if not dry_run:
        if not port_free(p.bind, p.port):
            raise InputError(f"port {p.port} is in use on {p.bind}", "pass --port N")
        doc = doctor(lambda: engine, image_ref)  # the driver, the GPUs, the runtime, CUDA's driver floor, GPU code
        if doc.failed:  # one line: the first failure and what to do (warnings only when it goes on)
            first = doc.failed[0]
            raise NotReady(f"cannot serve here: {first.name}: {first.detail}", first.hint or "run 'sglbuild doctor IMAGE' for every check")
        for f in doc.findings:
            if f.status == "warn":
                say(f"doctor: {f.name}: {f.detail}")
    check_flags(engine, p)
    if dry_run:
        return dry_run_text(p)
    container = start(engine, p)
    say(f"starting {p.name} ({container.short_id}); waiting for {p.url}/health ...")
    try:
        wait_healthy(container, p.url, p.api_key)
    except BaseException:
        engine.containers.remove(container)
        raise
    lines = [f"serving {p.model} at {p.url}  (stop: docker rm -f {p.name or container.short_id})"]
    auth = ""
    if p.api_key:
        lines.append(f"API key (shown once): {p.api_key}")
        auth = f"-H 'Authorization: Bearer {p.api_key}' "
    lines.append(f"curl {p.url}/generate {auth}-H 'Content-Type: application/json' "
                 "-d '{\"text\": \"The capital of France is\", \"sampling_params\": {\"max_new_tokens\": 32}}'")
    return "\n".join(lines) + "\n"

