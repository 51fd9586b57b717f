"""How the probe travels into an image: its files as a tar to unpack at a container's root, before the container starts.

Host-side, standard library only like the rest of the package, beside the files it packs: the probe's modules and the
base modules they import (``contracts``, ``errors``). Copied rather than mounted, so the probe runs in any engine's
containers, local or not.
"""

from __future__ import annotations

import functools
import io
import tarfile
from pathlib import Path

from ..contracts import PROBE_MOUNT

BUILDER_DIR = Path(__file__).resolve().parent.parent
# What the probe is made of: standard library only (tests/test_probe_isolation.py holds that line).
PROBE_FILES = ("__init__.py", "contracts.py", "errors.py", "probe/*.py")


@functools.lru_cache(maxsize=1)
def probe_archive() -> bytes:
    """builder/'s probe files as a tar to unpack at the container's root (into PROBE_MOUNT/builder)."""
    root = f"{PROBE_MOUNT.strip('/')}/builder"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = root.split("/")
        for directory in ["/".join(parts[:i]) for i in range(1, len(parts) + 1)] + [f"{root}/probe"]:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for pattern in PROBE_FILES:
            for path in sorted(BUILDER_DIR.glob(pattern)):
                data = path.read_bytes()
                info = tarfile.TarInfo(f"{root}/{path.relative_to(BUILDER_DIR)}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
