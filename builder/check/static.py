"""The static probe's answer for an image: run once inside it, and kept by image ID.

The answer depends only on the image's content (its ID hashes a config that names every layer
by the hash of its contents), the probe's own code, the architectures it compiles for and the
flags it parses, so it is kept under all of those: a second verify of the same image, or the
gate after a derived target's evidence step, reads it instead of running the probe again.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from ..contracts import PROBE_VERSION, StaticReply
from ..state import remember, remembered

if TYPE_CHECKING:
    from ..engine import Engine


def static_reply(engine: Engine, image_id: str, archs: list[str], flags: list[str] | None, *, fresh: bool = False) -> StaticReply:
    """The probe's answer for IMAGE_ID, with its JIT probe for ARCHS and FLAGS (None: none given) parsed by its SGLang."""
    from ..engine.containers import probe_archive

    code = hashlib.sha256(probe_archive()).hexdigest()[:16]
    key = json.dumps([PROBE_VERSION, code, image_id, archs, flags])
    if not fresh:
        kept = remembered("probe", key)
        if kept is not None:
            return StaticReply.from_dict(kept)
    args = ["static", "--target", ",".join(archs)] + (["--flags", json.dumps(flags)] if flags is not None else [])
    answer = engine.containers.probe(image_id, args)
    reply = StaticReply.from_dict(answer)  # refuses a reply of another shape before it is kept
    remember("probe", key, answer)
    return reply
