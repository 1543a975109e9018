"""Host addresses: which one reaches a local server, and which are this machine's loopback."""

from __future__ import annotations

import ipaddress


def reachable_host(host: str) -> str:
    """The address that reaches a server on this machine that binds `host` (any: loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP (127.0.0.0/8, ::1); a host name other than localhost is
    not resolved, so it counts as not loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
