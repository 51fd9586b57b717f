"""Registry references, and the rules sglbuild holds them to.

A registry repository is given as ``HOST[:PORT]/PATH``. A URL, perhaps with a user and password
in it, is refused without repeating it: credentials belong to ``docker login`` (the engine's
store), never to sglbuild's arguments, output, labels or records.
"""

from __future__ import annotations

from .errors import InputError


def check_repo(repo: str) -> str:
    """REPO as a registry repository (HOST[:PORT]/PATH), or an InputError that does not repeat it."""
    scheme = "://" in repo
    authority = repo.split("://", 1)[-1].split("/", 1)[0]
    userinfo = "@" in authority
    if scheme or userinfo:
        host = authority.rpartition("@")[2]
        raise InputError(f"the repository is given as a URL{' with credentials in it' if userinfo else ''} (host {host})",
                         "give HOST[:PORT]/PATH, and log in with 'docker login HOST'")
    return repo
