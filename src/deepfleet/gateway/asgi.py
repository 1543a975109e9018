"""The gateway's ASGI front: the generation routes straight from the server, the rest through
Starlette.

POST /v1/chat/completions and /v1/completions are most of the traffic and read only two
headers and the body, so they skip Starlette's middleware stack, Request object and router
(tens of microseconds per request, paid on the time to first token). Every other route, the
lifespan and the error pages stay with Starlette.

Every HTTP request passes the browser checks of origin.py first (Host allowlist, JSON POSTs):
the generation routes read the two headers in the scan they already make, and pass without a
call when the body is declared exactly `application/json` and the Host's cached verdict is
good (or there is no Host); every other request gets origin.py's full check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from deepfleet.gateway.errors import error_response
from deepfleet.gateway.httpserver import HOOKS
from deepfleet.gateway.origin import Origins

log = logging.getLogger(__name__)

Handler = Callable[["Incoming", str], Awaitable[Callable[[Scope, Receive, Send], Awaitable[None]]]]


class Incoming:
    """What the generation routes read of a request: four headers and the body."""

    __slots__ = ("authorization", "content_length", "content_type", "host", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.authorization: str | None = None
        self.content_length: str | None = None
        self.content_type: bytes | None = None
        self.host: bytes | None = None
        self.receive = receive
        for name, value in scope["headers"]:
            if name == b"authorization":
                self.authorization = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"content-type":
                self.content_type = value
            elif name == b"host":
                self.host = value

    def gone(self) -> bool:
        """The client's connection is lost (known on the gateway's own server, httpserver.py;
        False on servers without its hooks)."""
        hooks = self.scope.get("extensions", {}).get(HOOKS)
        return bool(hooks is not None and hooks.lost)

    async def body(self, limit: int) -> bytes:
        """The body, or its first bytes past `limit` (the caller answers 413 then); what came
        before a disconnect when the client leaves."""
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            message = await self.receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            parts.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)


class GatewayASGI:
    def __init__(
        self,
        handler: Handler,
        paths: frozenset[str],
        rest: ASGIApp,
        origins: Origins | None = None,
    ) -> None:
        self.handler = handler
        self.paths = paths
        self.rest = rest
        self.origins = origins or Origins()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.rest(scope, receive, send)
            return
        if scope["method"] != "POST" or scope["path"] not in self.paths:
            # Only the admin routes take other POSTs (JSON); elsewhere POST stays a 405.
            json = scope["method"] == "POST" and scope["path"].startswith("/admin/")
            refusal = self.origins.refuse_scope(json, scope["headers"])
            await (refusal or self.rest)(scope, receive, send)
            return
        incoming = Incoming(scope, receive)
        host, origins = incoming.host, self.origins
        if not (
            incoming.content_type == b"application/json"
            and (host is None or origins.verdicts.get(host))
        ):
            refusal = origins.refuse(True, host, incoming.content_type)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        try:
            response = await self.handler(incoming, scope["path"])
        except Exception:
            log.exception("gateway error on %s", scope["path"])
            response = _internal_error()
        await response(scope, receive, send)


def _internal_error() -> Response:
    return error_response(500, "the gateway failed on this request", code="internal_error")
