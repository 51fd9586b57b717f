"""sha256 of files, with a cache keyed by (size, mtime, inode) so unchanged files are not re-read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..state import atomic_write

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class VerifiedCache:
    """Remembers which wheelhouse files were verified, so a no-op build skips 5 GB of hashing.

    An entry is trusted only while the file's size, mtime and inode are unchanged.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".verified.json"
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def _stamp(path: Path) -> list:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def known_good(self, path: Path, sha256: str) -> bool:
        entry = self.entries.get(path.name)
        try:
            return entry is not None and entry[0] == sha256 and entry[1:] == self._stamp(path)
        except OSError:
            return False

    def remember(self, path: Path, sha256: str) -> None:
        self.entries[path.name] = [sha256, *self._stamp(path)]

    def forget(self, name: str) -> None:
        self.entries.pop(name, None)

    def save(self) -> None:
        if not self.path.parent.is_dir():  # no wheelhouse (a build served whole by the cache): nothing to remember
            return
        try:
            atomic_write(self.path, json.dumps(self.entries, sort_keys=True))
        except OSError:  # the cache only saves time; losing it loses nothing, and leaves nothing (a full disk)
            pass
