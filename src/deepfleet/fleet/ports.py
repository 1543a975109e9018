"""Free TCP ports on loopback for engines and their KV event sockets."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", exclude: set[int] | None = None) -> int:
    """A port the OS reports free now. Another process could take it before we bind it; the
    supervisor's restart covers that rare case."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if not exclude or port not in exclude:
            return port


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
