"""``docker build``: one stage's Dockerfile, built by the engine, read from its progress stream."""

from __future__ import annotations

import io
import re
import tarfile
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import BuildFailed, DiskFull, EngineError, Interrupted
from .guard import guard

if TYPE_CHECKING:
    from . import Engine


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes the engine puts around a step's stderr


def context_tar(files: dict[str, str]) -> io.BytesIO:
    """A build context holding only the given small text files (never wheels)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def read_build_stream(chunks: Iterable[dict], stage: str, on_line: Callable[[str], None] | None = None,
                      on_failure: Callable[[list[str]], None] | None = None) -> str:
    """The image ID a classic build's progress stream ends with; its failure as one of our errors.

    ``on_line`` sees every output line as it comes; ``on_failure`` the last 25 lines once a
    step failed (so the reason is on screen above the one-line error).
    """
    tail: deque[str] = deque(maxlen=25)
    image_id = ""
    for chunk in chunks:
        for line in _ANSI.sub("", chunk.get("stream") or "").splitlines():
            if line.strip():
                tail.append(line)
                if on_line:
                    on_line(line)
        if "error" in chunk:
            message = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
            if on_failure:
                on_failure(list(tail))
            if "no space left on device" in message.lower():
                raise DiskFull(f"stage {stage}: disk full during the build", "free space (sglbuild gc) and build again")
            code = re.search(r"returned a non-zero code: (\d+)", message)
            errors = [ln.strip() for ln in tail if re.search(r"\berror\b", ln, re.I) and not ln.startswith("The command")]
            why = (errors or [message.strip().splitlines()[-1]])[-1][:300]
            step = f"a step exited with code {code.group(1)}: " if code else ""
            raise BuildFailed(f"stage {stage} failed: {step}{why}", "the step's last lines are above; nothing was tagged")
        aux = chunk.get("aux") or {}
        if "ID" in aux:
            image_id = aux["ID"]
    if not image_id:
        raise EngineError(f"stage {stage}: the engine's build stream ended without an image ID")
    return image_id


class Builds:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def classic(self, dockerfile: str, stage: str, *, network: str, buildargs: dict[str, str], labels: dict[str, str],
                nocache: bool, on_line: Callable[[str], None] | None = None,
                on_failure: Callable[[list[str]], None] | None = None, platform: str | None = None) -> str:
        """Build DOCKERFILE with the engine's classic builder (for PLATFORM, another than the engine's own); returns the image ID (untagged)."""
        with guard(f"the build of stage {stage}"):
            stream = self.engine.client.api.build(
                fileobj=context_tar({"Dockerfile": dockerfile}), custom_context=True, rm=True, forcerm=True,
                nocache=nocache, pull=False, decode=True, network_mode=network, buildargs=buildargs, labels=labels,
                **({"platform": platform} if platform else {}),
            )
            try:
                return read_build_stream(stream, stage, on_line, on_failure)
            except KeyboardInterrupt:
                raise Interrupted(f"build interrupted during stage {stage}; no tag was moved", "run the build again") from None
            finally:
                getattr(stream, "close", lambda: None)()
