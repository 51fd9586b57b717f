"""Serving settings -> the ``launch_server`` flags that the locked SGLang accepts.

Settings are what a user means ("no FlashInfer"); flags are how one SGLang release
spells it. SGLang 0.3 replaced ``--disable-flashinfer`` with ``--attention-backend``
and ``--sampling-backend``; 0.5.x has no ``--disable-flashinfer`` at all, so "no
FlashInfer" there means a non-FlashInfer attention backend and PyTorch sampling.
"""

from __future__ import annotations

from packaging.version import Version

from ..errors import InputError
from .profile import Serve

# First release whose launch_server has --attention-backend / --sampling-backend.
_BACKEND_FLAGS = Version("0.3.0")


def server_flags(serve: Serve, sglang_version: str, *, address: bool = True) -> list[str]:
    """The flags for SERVE in this SGLang release; ``address`` False leaves out --host and --port."""
    version = Version(sglang_version)
    flags: list[str] = ["--host", serve.host, "--port", str(serve.port)] if address else []
    if not serve.cuda_graph:
        flags.append("--disable-cuda-graph")
    if not serve.custom_all_reduce:
        flags.append("--disable-custom-all-reduce")
    if not serve.radix_cache:
        flags.append("--disable-radix-cache")
    if version >= _BACKEND_FLAGS:
        if serve.attention_backend:
            flags += ["--attention-backend", serve.attention_backend]
        if not serve.flashinfer:
            flags += ["--sampling-backend", "pytorch"]
    else:
        if serve.attention_backend and serve.attention_backend not in ("flashinfer", "triton"):
            raise InputError(f"sglang {version} has no attention backend {serve.attention_backend!r}")
        if not serve.flashinfer:
            flags.append("--disable-flashinfer")
        if serve.attention_backend == "triton":
            flags.append("--disable-flashinfer")
    return flags
