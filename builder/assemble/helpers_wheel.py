"""builder/helpers as a wheel the build serves to its steps, byte for byte the same on every machine."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

from ..contracts import TOOLS
from ..inputs.lockfile import Wheel

HELPERS_DIR = Path(__file__).resolve().parent.parent / "helpers"
HELPERS_NAME = "sglbuild-helpers"


def helpers_wheel() -> tuple[Wheel, bytes]:
    """The helpers' wheel and its bytes.

    Stored (not deflated) with fixed times and modes, so its sha256 depends on the helpers'
    sources alone and stage keys agree across machines and zlib versions.
    """
    dist, version = "sglbuild_helpers", "1.0"
    files = {f"{dist}/{p.name}": p.read_bytes() for p in sorted(HELPERS_DIR.glob("*.py"))}
    info = f"{dist}-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {HELPERS_NAME}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: sglbuild\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for n, d in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in files:
            zi = zipfile.ZipInfo(name, date_time=(2025, 9, 18, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, files[name])
    data = buf.getvalue()
    filename = f"{dist}-{version}-py3-none-any.whl"
    return Wheel(HELPERS_NAME, version, filename, hashlib.sha256(data).hexdigest(), None, TOOLS), data
