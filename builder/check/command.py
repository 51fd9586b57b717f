"""The server command an image runs: from its ENTRYPOINT and CMD (or a user's ``docker run`` arguments).

An image made by hand, like the field report's, carries its server flags there:

    ENTRYPOINT ["python3", "-m", "sglang.launch_server"]   CMD ["--model-path", "M", "--disable-flashinfer"]
    CMD ["python3", "-m", "sglang.launch_server", "--model-path", "M", ...]
    CMD ["sh", "-c", "python3 -m sglang.launch_server --model-path M ..."]

This finds the ``sglang.launch_server`` (or ``sglang serve``) call in the effective command
and returns the arguments it gets. An sglbuild image declares its default flags in a label;
its entrypoint puts them before whatever arguments start with '-'.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ..contracts import ENTRYPOINT_IN_IMAGE, LABEL_SERVE_FLAGS
from ..engine.records import ImageConfig

_SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash"}
_SEPARATORS = {"&&", "||", ";", "|", "&"}


DEFAULT_LAUNCHER = ("python", "-m", "sglang.launch_server")


@dataclass(frozen=True)
class ServerCommand:
    flags: list[str] | None  # the arguments the server gets (None: the image runs no SGLang server)
    source: str  # where they were read: "the io.sglbuild.serve-flags label", "its ENTRYPOINT/CMD", ...
    launcher: tuple[str, ...] = DEFAULT_LAUNCHER  # how the image starts the server: its interpreter and module


def effective_argv(entrypoint: list[str] | None, cmd: list[str] | None, run_args: list[str] | None) -> list[str]:
    """What the container runs: ENTRYPOINT + CMD, with the user's arguments in place of CMD."""
    return [*(entrypoint or []), *(cmd if run_args is None else run_args)]


def _words(argv: list[str]) -> list[str]:
    """ARGV with each `sh -c STRING` expanded into STRING's words."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _SHELLS and argv[i + 1:i + 2] == ["-c"] and i + 2 < len(argv):
            try:
                out += shlex.split(argv[i + 2])
            except ValueError:
                out.append(argv[i + 2])
            i += 3
            continue
        out.append(argv[i])
        i += 1
    return out


def launch_server(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """(the launcher, its arguments) of the ``-m sglang.launch_server`` (or ``sglang serve``) call in ARGV.

    The arguments stop at a shell separator; the launcher is the interpreter and module (or program).
    """
    words = _words(argv)
    for i, word in enumerate(words):
        launcher: tuple[str, ...] = ()
        if word == "sglang.launch_server" and i > 1 and words[i - 1] == "-m":
            launcher = (words[i - 2], "-m", word)
        elif word.endswith("sglang/launch_server.py") and i > 0:
            launcher = (words[i - 1], word)
        elif word.rsplit("/", 1)[-1] == "sglang" and words[i + 1:i + 2] == ["serve"]:
            launcher = (word, "serve")
        if launcher:
            rest = words[i + (2 if launcher[-1] == "serve" else 1):]  # after "sglang serve", or after the module or script
            stop = next((j for j, w in enumerate(rest) if w in _SEPARATORS), len(rest))
            return launcher, rest[:stop]
    return None


def server_command(config: ImageConfig, labels: dict[str, str], run_args: list[str] | None) -> ServerCommand:
    """The server flags IMAGE's config (and the user's RUN_ARGS) give, and where they came from."""
    label = labels.get(LABEL_SERVE_FLAGS)
    entrypoint, cmd = list(config.entrypoint), list(config.cmd)
    if label is not None and entrypoint == [ENTRYPOINT_IN_IMAGE]:
        defaults = json.loads(label or "[]")
        if run_args is None:
            return ServerCommand(defaults, f"the {LABEL_SERVE_FLAGS} label (the image's default flags)")
        if run_args and run_args[0].startswith("-"):
            return ServerCommand([*defaults, *run_args], f"the {LABEL_SERVE_FLAGS} label, then the given arguments")
        found = launch_server(run_args)
        return ServerCommand(found[1], "the given command", found[0]) if found else ServerCommand(None, "the given command")
    where = "its ENTRYPOINT and the given arguments" if run_args is not None else "its ENTRYPOINT/CMD"
    found = launch_server(effective_argv(entrypoint, cmd, run_args))
    if found is None:
        return ServerCommand(None, f"{where} (which start no SGLang server)")
    return ServerCommand(found[1], where, found[0])
