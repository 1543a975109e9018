"""Fixtures for the fleet flow's tests."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def ready_server() -> Iterator[tuple[str, list[int]]]:
    """A tiny HTTP server whose /ready answers the next status of `codes` (the last one stays)."""
    codes = [503, 200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = codes.pop(0) if len(codes) > 1 else codes[0]
            body = b'{"ready": false, "models": {"m": 0}}' if code != 200 else b"{}"
            self.send_response(code if self.path == "/ready" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", codes
    finally:
        server.shutdown()
        server.server_close()
