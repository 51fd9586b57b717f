"""``sglbuild serve``: run an image's server the way the field report did, with flags it accepts.

The container is described once (:mod:`builder.check.server`): ``--dry-run`` prints it,
otherwise doctor checks this machine for it (its shared memory, its Hugging Face cache), the
image's own SGLang parses every flag it will get, and it is started and waited for.
"""

from __future__ import annotations

import json
import shlex
import socket
from typing import TYPE_CHECKING, Any

from ..contracts import Outcome
from ..errors import CheckFailed, InputError, NotReady
from ..check.doctor import doctor
from ..check.server import ServerContainer, server_container, start, wait_healthy

if TYPE_CHECKING:
    from ..engine import Engine


def check_flags(engine: Engine, server: ServerContainer) -> None:
    """Every flag the server will get, parsed by the image's own SGLang."""
    outcome = Outcome.from_dict(engine.containers.probe(server.image, ["flags", json.dumps(server.server_args)]))
    if not outcome.ok:
        raise CheckFailed(f"the SGLang in {server.image} rejects the server flags: {outcome.error}")


def port_free(bind: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((bind, port))
        except OSError:
            return False
    return True


def serve(engine: Engine, image_ref: str, *, model: str | None, preset: str | None, port: int | None, public: bool,
          api_key: str | None, dry_run: bool, say: Any) -> str:
    """Describe, check, then print (dry run) or start the server and wait for it; returns what to print on stdout."""
    image = engine.images.get(image_ref)
    server = server_container(image_ref, image.config, image.labels, model, preset, port, public=public, api_key=api_key)
    if not dry_run:
        if not port_free(server.bind, server.port):
            raise InputError(f"port {server.port} is in use on {server.bind}", "pass --port N")
        report = doctor(lambda: engine, image_ref, shm=server.shm)  # the driver, GPUs, runtime, CUDA's floor, GPU code
        if report.failed:  # one line: the first failure and what to do (warnings only when it goes on)
            first = report.failed[0]
            raise NotReady(f"cannot serve here: {first.name}: {first.detail}", first.hint or "run 'sglbuild doctor IMAGE' for every check")
        for c in report.checks:
            if c.status == "warn":
                say(f"doctor: {c.name}: {c.detail}")
    check_flags(engine, server)
    if dry_run:
        return shlex.join(server.docker_run()) + "\n"
    container = start(engine, server)
    say(f"starting {server.name} ({container[:12]}); waiting for {server.url}/health ...")
    try:
        wait_healthy(engine, container, server)
    except BaseException:
        engine.containers.remove(container)
        raise
    lines = [f"serving {server.model} at {server.url}  (stop: docker rm -f {server.name or container[:12]})"]
    auth = ""
    if server.api_key:
        lines.append(f"API key (shown once): {server.api_key}")
        auth = f"-H 'Authorization: Bearer {server.api_key}' "
    lines.append(f"curl {server.url}/generate {auth}-H 'Content-Type: application/json' "
                 "-d '{\"text\": \"The capital of France is\", \"sampling_params\": {\"max_new_tokens\": 32}}'")
    return "\n".join(lines) + "\n"
