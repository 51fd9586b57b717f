"""Debian packages a stage installs on top of the base, locked like the base's: each file by its sha256.

A stage may add Debian packages (``debian = ["g++"]``: the C++ compiler FlashInfer's JIT needs) without
giving the target a base of its own: ``base`` and ``system`` stay the images other targets share. The
packages are resolved against the base's own closure (``mmdebstrap --simulate`` of the base's packages
and the stage's), and each new one is found in the mirror's index of the suite, which is checked
against the suite's signed ``InRelease`` (``gpgv`` with Debian's archive keyring) and gives the file's
path and sha256. The build installs those files, from the verified wheelhouse, with no network.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, NetworkError, ResolutionError, ToolMissing

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@dataclass(frozen=True)
class IndexEntry:
    filename: str  # the pool path, relative to the mirror
    sha256: str
    size: int


def fetch(url: str) -> bytes:
    """The file the mirror serves at URL (NetworkError when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.read()
    except (urllib.error.URLError, OSError) as exc:
        raise NetworkError(f"the Debian mirror did not answer for {url}: {getattr(exc, 'reason', exc)}", "check the mirror and the network") from None


def signed_release(mirror: str, suite: str) -> str:
    """The suite's InRelease, its signature checked with Debian's archive keyring; its signed text."""
    if shutil.which("gpgv") is None or not KEYRING.is_file():
        raise ToolMissing("gpgv or Debian's archive keyring is missing: the mirror's index cannot be checked",
                          "apt-get install gpgv debian-archive-keyring")
    raw = fetch(f"{mirror.rstrip('/')}/dists/{suite}/InRelease")
    proc = subprocess.run(["gpgv", "--keyring", str(KEYRING), "--output", "-", "-"], input=raw, capture_output=True)
    if proc.returncode != 0:
        raise IntegrityError(f"the InRelease of {suite} on {mirror} is not signed by Debian's archive keys",
                             "check the mirror (or a proxy changing its files)")
    return proc.stdout.decode(errors="replace")


def packages_index(mirror: str, suite: str, arch: str) -> dict[tuple[str, str], IndexEntry]:
    """(package, version) -> its file, from main's Packages index for ARCH, checked against the signed release."""
    release = signed_release(mirror, suite)
    sha_section = release.split("\nSHA256:", 1)[-1]
    want = f"main/binary-{arch}/Packages.xz"
    m = re.search(rf"^\s*([0-9a-f]{{64}})\s+(\d+)\s+{re.escape(want)}$", sha_section, re.M)
    if not m:
        raise ResolutionError(f"the release of {suite} lists no {want}")
    data = fetch(f"{mirror.rstrip('/')}/dists/{suite}/{want}")
    if hashlib.sha256(data).hexdigest() != m.group(1):
        raise IntegrityError(f"{want} of {suite} does not match the sha256 its signed release gives")
    out: dict[tuple[str, str], IndexEntry] = {}
    for stanza in lzma.decompress(data).decode(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version|Filename|SHA256|Size): (.*)$", stanza, re.M))
        if {"Package", "Version", "Filename", "SHA256", "Size"} <= set(fields):
            out[(fields["Package"], fields["Version"])] = IndexEntry(fields["Filename"], fields["SHA256"], int(fields["Size"]))
    return out
