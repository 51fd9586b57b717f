"""``sglbuild serve``: run an image's server the way the field report did, with flags it accepts.

The image's entrypoint adds its default (compatibility) flags; a preset adds the
model-specific ones from the field report. ``--dry-run`` prints the exact ``docker run``
command after the image's own SGLang has parsed every flag it will get.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import CheckFailed, EnvironmentProblem, InputError

if TYPE_CHECKING:  # docker-py loads only when a command talks to the engine
    import docker

HF_CACHE = "~/.cache/huggingface"
ALLOC_CONF = "expandable_segments:True"


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
class Plan:
    image: str
    model: str  # as the server sees it (a local directory is mounted at /model)
    model_dir: str | None
    port: int
    shm: str
    name: str
    flags: tuple[str, ...]

    def docker_run(self) -> list[str]:
        cmd = ["docker", "run", "--rm", "--runtime", "nvidia", "--gpus", "all", "-p", f"{self.port}:8000",
               "-v", f"{os.path.expanduser(HF_CACHE)}:/root/.cache/huggingface"]
        if self.model_dir:
            cmd += ["-v", f"{self.model_dir}:/model:ro"]
        cmd += ["-e", f"PYTORCH_CUDA_ALLOC_CONF={ALLOC_CONF}", "--shm-size", self.shm, "--name", self.name,
                self.image, "--model-path", self.model, *self.flags]
        return cmd


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.path.exists(model)


def plan(image: str, model: str | None, preset: str | None, port: int | None) -> Plan:
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
    slug = re.sub(r"[^a-z0-9]+", "-", (model_dir or model).rsplit("/", 1)[-1].lower()).strip("-")
    return Plan(image, model, model_dir, port or (p.port if p else 30000), p.shm if p else "8g", f"sglang-{slug}",
                (*(p.flags if p else ()), *COMMON_FLAGS))


def check_flags(client: docker.DockerClient, image: str, extra: tuple[str, ...]) -> list[str]:
    """Parse the image's default flags plus EXTRA with the image's own SGLang; return the full list."""
    from .archs import run_probe
    from .engine import find_image

    found = find_image(client, image)
    if found is None:
        raise InputError(f"no image {image!r} on this engine", "build it (sglbuild build) or pull it")
    defaults = json.loads((found.labels or {}).get("io.sglbuild.serve-flags", "[]") or "[]")
    flags = [*defaults, *extra]
    answer = run_probe(client, found.id, ["flags", json.dumps(flags)])
    if not answer.get("ok"):
        raise CheckFailed(f"the SGLang in {image} rejects the server flags: {answer.get('error')}")
    return flags


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def start(client: docker.DockerClient, p: Plan, detach_name: bool = True):
    from docker.types import DeviceRequest

    volumes = {os.path.expanduser(HF_CACHE): {"bind": "/root/.cache/huggingface", "mode": "rw"}}
    if p.model_dir:
        volumes[p.model_dir] = {"bind": "/model", "mode": "ro"}
    return client.containers.run(
        p.image, ["--model-path", p.model, *p.flags], detach=True, name=p.name if detach_name else None,
        device_requests=[DeviceRequest(count=-1, capabilities=[["gpu", "compute", "utility"]])], shm_size=p.shm,
        ports={"8000/tcp": p.port}, volumes=volumes, environment={"PYTORCH_CUDA_ALLOC_CONF": ALLOC_CONF},
    )


def wait_healthy(container, url: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            tail = container.logs(tail=5).decode(errors="replace").strip().splitlines()
            raise CheckFailed(f"the server exited: {tail[-1] if tail else '(no output)'}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(2)
    raise CheckFailed(f"the server was not healthy within {timeout:.0f} s")


def dry_run_text(p: Plan) -> str:
    return shlex.join(p.docker_run()) + "\n"


def require_gpu(client: docker.DockerClient) -> None:
    if "nvidia" not in (client.info().get("Runtimes") or {}):
        raise EnvironmentProblem("this engine has no NVIDIA runtime: no GPU to serve on",
                                 "install the NVIDIA container toolkit, or use --dry-run to see the command")
