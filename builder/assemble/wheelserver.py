"""The build's wheelhouse, served read-only over HTTP to the build network.

Only files the lock names (and that were verified) are served; the index page is a
PEP 503 flat list with each file's sha256, and pip/uv in the build check the hashes
again. Nothing is uploaded into the build context, so nothing lands in a layer.

It listens on the build network's gateway, but a host address answers every local network (a
container on the default bridge can reach it too), so it also refuses any connection that does
not come from the build network's subnet.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from ..inputs.lockfile import Wheel


class WheelServer:
    def __init__(self, wheelhouse: Path, wheels: list[Wheel], host: str, extra: dict[str, bytes] | None = None, *,
                 allowed: str | None = None) -> None:
        files = {w.filename: (wheelhouse / w.filename, w.sha256) for w in wheels}
        extra = dict(extra or {})  # small files from memory: the lock, the SBOM, the entrypoint, the helpers wheel
        listed = {n: h for n, (_, h) in files.items()}
        listed.update({n: hashlib.sha256(d).hexdigest() for n, d in extra.items() if n.endswith(".whl")})
        index = "".join(f'<a href="{quote(n)}#sha256={h}">{html.escape(n)}</a>\n' for n, h in sorted(listed.items()))
        page = f"<!DOCTYPE html>\n<html><body>\n{index}</body></html>\n".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = unquote(urlsplit(self.path).path).lstrip("/")
                if name in ("", "index.html"):
                    self._send(200, "text/html", len(page))
                    self.wfile.write(page)
                    return
                if name in extra:
                    self._send(200, "application/octet-stream", len(extra[name]))
                    self.wfile.write(extra[name])
                    return
                entry = files.get(name)
                if entry is None:
                    self._send(404, "text/plain", 0)
                    return
                path = entry[0]
                size = path.stat().st_size
                self._send(200, "application/octet-stream", size)
                with open(path, "rb") as f:
                    self.connection.sendfile(f)

            def _send(self, code: int, ctype: str, length: int) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        subnet = ipaddress.ip_network(allowed) if allowed else None

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: object, client_address: tuple) -> bool:  # type: ignore[override]
                return subnet is None or ipaddress.ip_address(client_address[0]) in subnet

        self.httpd = Server((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "WheelServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
