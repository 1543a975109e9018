"""A node that holds a verified model folder serves it to the other nodes over the LAN.

Read-only HTTP on the node's cluster address, for the duration of one spread:
- `GET /manifest`: the folder's complete-marker (each file's size and the hub's checksum), so a
  fetching node verifies every byte against what the hub published, not against this node.
- `GET /files/<name>`: a file listed in the manifest, `Range: bytes=N-` honoured (206), so an
  interrupted fetch resumes; names outside the manifest are 404 (no path traversal).
- `POST /progress`: a fetching node's `{"node", "done", "total", "state"}`, kept for `status`.
Every request must carry `Authorization: Bearer <token>`; the token is made per spread and
handed to the fetching nodes through Ray, whose own traffic is authenticated by the cluster
token. Bytes sent are counted per fetching node (header `X-Deepfleet-Node`).
"""

from __future__ import annotations

import hmac
import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from deepfleet.weights import cache

NODE_HEADER = "X-Deepfleet-Node"
_CHUNK = 1 << 20


@dataclass
class SeedStats:
    """What the server saw: body bytes sent and last progress report, per fetching node."""

    sent: dict[str, int] = field(default_factory=dict)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_sent(self, node: str, n: int) -> None:
        with self.lock:
            self.sent[node] = self.sent.get(node, 0) + n

    def report(self, node: str, data: dict[str, Any]) -> None:
        with self.lock:
            self.progress[node] = data

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "sent": dict(self.sent),
                "progress": {k: dict(v) for k, v in self.progress.items()},
            }


class _Handler(BaseHTTPRequestHandler):
    server: SeedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the spread reports progress itself."""

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.server.token}".encode()):
            return True
        self._reply(HTTPStatus.UNAUTHORIZED, b"a valid bearer token is required\n")
        return False

    def _reply(self, status: HTTPStatus, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path == "/manifest":
            self._reply(HTTPStatus.OK, self.server.manifest_bytes, "application/json")
            return
        name = unquote(self.path.removeprefix("/files/"))
        if not self.path.startswith("/files/") or name not in self.server.files:
            self._reply(HTTPStatus.NOT_FOUND, b"no such file in this model\n")
            return
        self._send_file(name)

    def do_POST(self) -> None:
        if not self._authorized():
            return
        length = int(self.headers.get("Content-Length", "0"))
        data = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/progress" and isinstance(data, dict) and "node" in data:
            self.server.stats.report(str(data["node"]), data)
            self._reply(HTTPStatus.NO_CONTENT, b"")
        else:
            self._reply(HTTPStatus.BAD_REQUEST, b"POST /progress {node, done, total}\n")

    def _send_file(self, name: str) -> None:
        path = self.server.folder / name
        size = path.stat().st_size
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = min(int(rng[6:-1] or 0), size)
        self.send_response(HTTPStatus.PARTIAL_CONTENT if start else HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        node = self.headers.get(NODE_HEADER, self.client_address[0])
        with path.open("rb") as f:
            f.seek(start)
            sent = 0
            try:
                while chunk := f.read(_CHUNK):
                    self.wfile.write(chunk)
                    sent += len(chunk)
            finally:
                self.server.stats.add_sent(node, sent)


class SeedServer(ThreadingHTTPServer):
    """Serves the complete folder `folder` on (host, port); port 0 picks a free one."""

    daemon_threads = True

    def __init__(self, folder: Path, token: str, host: str, port: int = 0) -> None:
        if not cache.is_complete(folder):
            raise FileNotFoundError(f"{folder} is not a complete, verified model folder")
        self.folder, self.token = folder, token
        marker = cache.read_marker(folder)
        self.files: dict[str, Any] = dict(marker["files"])  # type: ignore[call-overload]
        self.manifest_bytes = json.dumps(marker).encode()
        self.stats = SeedStats()
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SeedServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
