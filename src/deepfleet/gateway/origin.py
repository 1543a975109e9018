"""Who may talk to the gateway from a browser: the Host allowlist and JSON-only POSTs
(issue 19, finding 10).

A gateway on loopback is still reachable from any web page the user opens. Two attacks:
- CSRF: a page POSTs a form or a `fetch(..., {mode: "no-cors"})` to the gateway. Browsers send
  such cross-origin requests without asking first only for "simple" content types
  (form encodings, text/plain, none); `application/json` needs a CORS preflight, which the
  gateway never grants. So every POST must declare JSON (415 otherwise).
- DNS rebinding: a page on evil.example makes its name resolve to 127.0.0.1 and reads the
  answers as same-origin. The browser still sends `Host: evil.example`, so only known names are
  answered (400 otherwise): loopback names, names configured in `gateway.allowed_hosts`
  (rendered bundles add their service names), the bind address, and IP literals (an IP Host
  means the page's own origin is that IP: nothing was rebound). `*` allows every name. A
  request without Host (HTTP/1.0 tools) is not from a browser and passes.

Checks are a dict lookup per request: verdicts are cached per raw Host value (bounded), and
the generation routes read that cache inline (asgi.py): a request that declares exactly
`application/json` from a Host already known good costs no call here; anything else takes the
full check below.
"""

from __future__ import annotations

import ipaddress

from starlette.responses import Response

from deepfleet.gateway.errors import error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_CACHE_MAX = 1024


def host_name(host: str) -> str:
    """The Host header's name without its port, lowercased, brackets kept for IPv6."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def is_json(content_type: bytes | None) -> bool:
    """application/json, with parameters (charset) allowed."""
    if content_type is None:
        return False
    if content_type == b"application/json":
        return True
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class Origins:
    """The Host allowlist and the JSON rule, as refusals in the OpenAI envelope."""

    def __init__(self, allowed_hosts: tuple[str, ...] | list[str] = ()) -> None:
        names = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in names
        self.names = frozenset(LOOPBACK_NAMES | names)
        self.verdicts: dict[bytes, bool] = {}
        """The Host check's verdict per raw Host value seen (bounded)."""

    def host_ok(self, host: bytes | None) -> bool:
        if host is None or self.any_host:
            return True
        verdict = self.verdicts.get(host)
        if verdict is None:
            name = host_name(host.decode("latin-1"))
            verdict = name in self.names or _is_ip(name)
            if len(self.verdicts) >= _CACHE_MAX:
                self.verdicts.clear()
            self.verdicts[host] = verdict
        return verdict

    def refuse(self, json: bool, host: bytes | None, content_type: bytes | None) -> Response | None:
        """400 for an unknown Host; 415 when `json` is required and not declared."""
        if not self.host_ok(host):
            return error_response(
                400,
                "the Host header names no address of this gateway (see gateway.allowed_hosts)",
                param="Host",
                code="invalid_host",
            )
        if json and not is_json(content_type):
            return error_response(
                415,
                "POST bodies must be JSON: send Content-Type: application/json",
                param="Content-Type",
                code="unsupported_media_type",
            )
        return None

    def refuse_scope(self, json: bool, headers: list[tuple[bytes, bytes]]) -> Response | None:
        """The same checks for routes that do not scan headers themselves."""
        host = content_type = None
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"content-type":
                content_type = value
        return self.refuse(json, host, content_type)
