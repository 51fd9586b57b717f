"""``python3 -B -m sglbuild_helpers COMMAND``: what a build step does that the shell does badly.

    fetch URL SHA256 DEST MODE    download URL, refuse it unless its sha256 is SHA256, write DEST with MODE
    clashes REQUIREMENTS          the wheels of REQUIREMENTS to install again so the same one wins every build
    serve DIRECTORY PORT          serve DIRECTORY on 127.0.0.1:PORT in the background; prints the server's pid
                                  once it listens (BuildKit steps: the bind-mounted wheelhouse, read over HTTP
                                  exactly as the classic builder's steps read it, so both install the same files)

uv installs a stage's wheels in parallel, so when two of them ship the same file with
different contents either may win. ``clashes`` finds such files from the installed
wheels' RECORDs and names, for each, the owner that comes last in REQUIREMENTS; the step
installs those again, alone, and they win every build. Files with the same contents in
several wheels (namespace ``__init__.py`` files) are left alone.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import sys
import urllib.request


def fetch(url: str, sha256: str, dest: str, mode: str) -> None:
    with urllib.request.urlopen(url) as response:
        data = response.read()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        sys.exit(f"sglbuild: {url}: sha256 {got}, expected {sha256}")
    tmp = dest + ".part"
    with open(tmp, "wb") as out:
        out.write(data)
    os.chmod(tmp, int(mode, 8))
    os.replace(tmp, dest)


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def clashes(requirements: str) -> list:
    with open(requirements) as f:
        names = [line.split("==")[0] for line in f if line.strip()]
    order = {_key(n): i for i, n in enumerate(names)}
    hashes: dict = {}  # path -> {hash}
    owners: dict = {}  # path -> {index in REQUIREMENTS}
    for dist in md.distributions():
        i = order.get(_key(dist.metadata["Name"] or ""))
        if i is None:
            continue
        for f in dist.files or ():
            if f.hash:
                hashes.setdefault(str(f), set()).add(f.hash.value)
                owners.setdefault(str(f), set()).add(i)
    return [names[i] for i in sorted({max(owners[p]) for p, h in hashes.items() if len(h) > 1})]


def serve(directory: str, port: str) -> None:
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(port)), functools.partial(Quiet, directory=directory))
    pid = os.fork()
    if pid:  # the parent: the socket listens already; say who serves, and return to the step
        print(pid)
        return
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    server.serve_forever()


def main(argv: list) -> int:
    if argv[:1] == ["fetch"] and len(argv) == 5:
        fetch(*argv[1:])
    elif argv[:1] == ["clashes"] and len(argv) == 2:
        print(" ".join(clashes(argv[1])))
    elif argv[:1] == ["serve"] and len(argv) == 3:
        serve(argv[1], argv[2])
    else:
        sys.exit(f"sglbuild_helpers: usage: fetch URL SHA256 DEST MODE | clashes REQUIREMENTS | serve DIRECTORY PORT (got {argv!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
