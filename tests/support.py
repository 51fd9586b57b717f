"""Test helpers: real wheels, a real PEP 503 index on loopback, and a CLI runner."""

from __future__ import annotations

import base64
import hashlib
import html
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
SGLBUILD = [sys.executable, "-m", "builder.cli"]

# A stand-in for SGLang 0.5.9 with some of its real server flags (no --disable-flashinfer), so the
# image's own parser is what accepts or rejects flags; launch_server prints the arguments it got.
FAKE_SGLANG = {
    "sglang/__init__.py": b"__version__ = '0.5.9'\n",
    "sglang/srt/__init__.py": b"",
    "sglang/srt/server_args.py": b"""
class ServerArgs:
    @staticmethod
    def add_cli_args(p):
        p.add_argument('--model-path', required=True)
        p.add_argument('--host'); p.add_argument('--port', type=int)
        p.add_argument('--attention-backend', choices=['torch_native', 'triton', 'flashinfer', 'fa3'])
        p.add_argument('--sampling-backend', choices=['flashinfer', 'pytorch'])
        p.add_argument('--mem-fraction-static', type=float); p.add_argument('--max-total-tokens', type=int)
        p.add_argument('--log-level'); p.add_argument('--api-key')
        p.add_argument('--tp-size', '--tensor-parallel-size', dest='tp_size', type=int, default=1)
        for f in ('--disable-cuda-graph', '--disable-radix-cache', '--disable-custom-all-reduce', '--trust-remote-code'):
            p.add_argument(f, action='store_true')
""",
    "sglang/launch_server.py": b"import json, sys\nprint(json.dumps(sys.argv[1:]))\n",
}


def make_wheel(directory: Path, name: str, version: str, files: dict[str, bytes] | None = None,
               requires: list[str] | None = None, tag: str = "py3-none-any") -> Path:
    """Write a real, installable wheel (deterministic bytes for the same inputs)."""
    dist = name.replace("-", "_")
    files = dict(files or {f"{dist}/__init__.py": f"__version__ = {version!r}\n".encode()})
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires or []]
    files[f"{info}/METADATA"] = ("\n".join(meta) + "\n").encode()
    files[f"{info}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: sglbuild-tests\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{dist}-{version}-{tag}.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name_, data in files.items():
            zi = zipfile.ZipInfo(name_, date_time=(2025, 9, 18, 0, 0, 0))
            zi.external_attr = 0o644 << 16
            zf.writestr(zi, data)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PackageIndex:
    """A PEP 503 simple index served from a directory on 127.0.0.1.

    ``delay`` slows every file response down (for interrupt tests); ``tamper`` maps a
    file name to bytes served instead of the real file (for hash-mismatch tests).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "simple").mkdir(parents=True, exist_ok=True)
        self.delay = 0.0
        self.tamper: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        index = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self):  # noqa: N802
                index.requests.append((self.path, self.headers.get("Range")))
                name = Path(self.path.split("?")[0]).name
                if name in index.tamper:
                    data = index.tamper[name]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if index.delay and name.endswith(".whl"):
                    return self._slow(name)
                return super().do_GET()

            def _slow(self, name):
                path = Path(self.translate_path(self.path))
                data = path.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                try:
                    for i in range(start, len(data), 4096):
                        self.wfile.write(data[i:i + 4096])
                        time.sleep(index.delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/simple"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, wheel: Path) -> Path:
        project = canonicalize_name(wheel.name.split("-")[0])
        d = self.root / "simple" / project
        d.mkdir(parents=True, exist_ok=True)
        dest = d / wheel.name
        if wheel.resolve() != dest.resolve():
            shutil.copy2(wheel, dest)
        links = "".join(f'<a href="{html.escape(p.name)}#sha256={sha256(p)}">{html.escape(p.name)}</a>\n'
                        for p in sorted(d.glob("*.whl")))
        (d / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
        return dest

    def remove(self, filename: str) -> None:
        for p in (self.root / "simple").glob(f"*/{filename}"):
            p.unlink()
            self.add_index_only(p.parent)

    def add_index_only(self, d: Path) -> None:
        links = "".join(f'<a href="{html.escape(p.name)}#sha256={sha256(p)}">{html.escape(p.name)}</a>\n'
                        for p in sorted(d.glob("*.whl")))
        (d / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `sglbuild` command (as a user would) and capture its output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run([*SGLBUILD, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def tar_bytes(files: dict[str, bytes]) -> bytes:
    """FILES as an uncompressed tar, for put_archive or a build context."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
