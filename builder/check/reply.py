"""The static probe's answer for an image: run once inside it, and kept by the image's content.

The answer depends only on what a process in the image sees: its layers (named by the hashes of
their contents) and the run-time settings of its config (environment, user, working directory),
with the probe's own code, the architectures it compiles for, the flags it parses and the
variables it runs with. It is kept under all of those and nothing else: labels (a new revision)
do not make another answer, and the stage a derived target's evidence step probed answers for
every rebuild that gives the same layers (a second `--check-reproducible` build included).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from ..contracts import LABEL_FLASHINFER_AOT, PROBE_VERSION, JitAnswer, StaticReply
from ..state import remember, remembered

if TYPE_CHECKING:
    from ..engine import Engine
    from ..engine.records import ImageRecord


def _key(image: ImageRecord, archs: list[str], flags: list[str] | None, environment: dict[str, str] | None) -> str:
    from ..probe.pack import probe_archive

    code = hashlib.sha256(probe_archive()).hexdigest()[:16]
    aot = image.labels.get(LABEL_FLASHINFER_AOT)  # a label, but a question asked of the files: part of the key where declared
    return json.dumps([PROBE_VERSION, code, image.content_key, archs, flags] + ([sorted(environment.items())] if environment else [])
                      + ([aot] if aot else []))


def _kept(key: str) -> StaticReply | None:
    kept = remembered("probe", key)
    return StaticReply.from_dict(kept) if kept is not None else None


def kept_reply(image: ImageRecord, archs: list[str], flags: list[str] | None, environment: dict[str, str] | None = None) -> StaticReply | None:
    """The answer this machine holds for IMAGE probed with ARCHS, FLAGS and ENVIRONMENT, if any."""
    return _kept(_key(image, archs, flags, environment))


def static_reply(engine: Engine, image: ImageRecord, archs: list[str], flags: list[str] | None, *, fresh: bool = False,
                 environment: dict[str, str] | None = None, jit: dict[str, JitAnswer] | None = None) -> StaticReply:
    """The probe's answer for IMAGE, with its JIT probe for ARCHS and FLAGS (None: none given) parsed by its SGLang.

    ENVIRONMENT: variables set over the image's own (a derived target's evidence stage runs with its final stage's).
    JIT: the JIT probe's answer for the very files this image compiles with, known to the caller (the build's evidence
    stage, below a final layer of sglbuild's own files): the probe skips that compile, the slow part under emulation.
    """
    key = _key(image, archs, flags, environment)
    if not fresh and (kept := _kept(key)) is not None:
        return kept
    known = jit is not None and all(arch in jit for arch in archs)
    args = (["static", "--target", ",".join(archs)] + (["--flags", json.dumps(flags)] if flags is not None else [])
            + (["--no-jit"] if known else [])
            + (["--aot", image.labels[LABEL_FLASHINFER_AOT]] if image.labels.get(LABEL_FLASHINFER_AOT) else []))
    answer = engine.containers.probe(image.id, args, environment=environment)
    if known:
        answer["jit"] = {arch: jit[arch].to_dict() for arch in archs}
    reply = StaticReply.from_dict(answer)  # refuses a reply of another shape before it is kept
    remember("probe", key, answer)
    return reply
