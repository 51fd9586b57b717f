"""``sglbuild serve``: run an image's server the way the field report did, with flags it accepts and caches it keeps.

The container is described once (:mod:`builder.check.server`): the image's own flags, a preset's, any SGLang flag the
user gives after ``--``. Before any container starts, the image's own SGLang parses every flag (a flag it rejects is one
line, exit 2) and what they select is held to the image's evidence on the GPU here (a backend the image cannot run on
it is one line, exit 1, unless ``--force``); ``--dry-run`` then prints the exact ``docker run``. Otherwise doctor
checks this machine, the compile caches' volume is made (once per image content), and the server is started and
waited for.
"""

from __future__ import annotations

import shlex
import socket
from typing import TYPE_CHECKING, Any

from ..check.doctor import doctor
from ..check.server import ServerContainer, cache_volume, server_container, start, wait_healthy
from ..check.verify import judge_server_flags, serving_arch
from ..contracts import LABEL_CACHE_CONTENT
from ..errors import CheckFailed, InputError, NotReady

if TYPE_CHECKING:
    from ..engine import Engine
    from ..engine.records import VolumeRecord


def port_free(bind: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((bind, port))
        except OSError:
            return False
    return True


def describe(engine: Engine, image_ref: str, *, model: str | None, preset: str | None, port: int | None, public: bool,
             api_key: str | None, flags: tuple[str, ...] = (), force: bool = False, caches: bool = True) -> ServerContainer:
    """The server SERVE would start, its flags checked: parsed by the image's SGLang, held to its evidence."""
    image = engine.images.get(image_ref)
    server = server_container(image_ref, image.config, image.labels, model, preset, port, public=public, api_key=api_key,
                              extra=flags, cache_volume=cache_volume(image) if caches else None)
    arch, where = serving_arch(image.labels)
    check = judge_server_flags(engine, image_ref, server.server_args, arch)
    if check.status == "fail" and " rejects " in check.detail:
        why = check.detail.partition(": ")[2]
        if any(f.split("=", 1)[0] in why for f in flags if f.startswith("-")):  # the user's flag: bad input
            raise InputError(f"the SGLang in {image_ref} rejects the flags after --: {why}",
                             "spell them as the image's SGLang does: its python -m sglang.launch_server --help lists them")
        raise CheckFailed(f"the SGLang in {image_ref} rejects the server flags the image itself gives: {why}",
                          "fix the image's io.sglbuild.serve-flags (sglbuild verify IMAGE says which)")
    if check.status == "fail" and not force:
        raise CheckFailed(f"{check.detail} ({arch}: {where})", "serve other flags (sglbuild verify IMAGE shows those its evidence "
                          "supports), or --force to start it anyway")
    return server


def compile_caches(engine: Engine, image_ref: str) -> tuple[VolumeRecord, bool]:
    """The compile caches' volume of IMAGE_REF, made now (True) unless a server of the same content made it before."""
    image = engine.images.get(image_ref)
    return engine.volumes.ensure(cache_volume(image), {LABEL_CACHE_CONTENT: image.content_key})


def serve(engine: Engine, image_ref: str, *, model: str | None, preset: str | None, port: int | None, public: bool,
          api_key: str | None, dry_run: bool, say: Any, flags: tuple[str, ...] = (), force: bool = False, caches: bool = True) -> str:
    """Describe and check, then print (dry run) or start the server and wait for it; returns what to print on stdout."""
    server = describe(engine, image_ref, model=model, preset=preset, port=port, public=public, api_key=api_key, flags=flags,
                      force=force, caches=caches)
    if dry_run:
        return shlex.join(server.docker_run()) + "\n"
    if not port_free(server.bind, server.port):
        raise InputError(f"port {server.port} is in use on {server.bind}", "pass --port N")
    report = doctor(lambda: engine, image_ref, shm=server.shm)  # the driver, GPUs, runtime, CUDA's floor, GPU code
    if report.failed:  # one line: the first failure and what to do (warnings only when it goes on)
        first = report.failed[0]
        raise NotReady(f"cannot serve here: {first.name}: {first.detail}", first.hint or "run 'sglbuild doctor IMAGE' for every check")
    for c in report.checks:
        if c.status == "warn":
            say(f"doctor: {c.name}: {c.detail}")
    if server.cache_volume:
        volume, made = compile_caches(engine, image_ref)
        say(f"compile caches: {'new' if made else 'kept'} volume {volume.name}")
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
