"""Reading a gateway's admission counters in tests, across the layouts the gateway had (its
admission state on `Gateway` itself, on `Gateway.admission`, or a key's slots in the state
backend's limits), so the same security test runs against the code before and after a fix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from deepfleet.gateway.app import Gateway
from deepfleet.gateway.asgi import Incoming


def key_in_flight(gw: Gateway, key_id: str) -> int:
    """Requests of the key this worker counts as in flight."""
    owner: Any = gw if hasattr(gw, "concurrency") else gw.admission
    if hasattr(owner, "concurrency"):
        return int(owner.concurrency._count[key_id])
    return int(owner.buckets._concurrency._count[key_id])


def free_upstream_slots(gw: Gateway) -> int:
    queue: Any = getattr(gw.admission, "queue", gw.admission)
    return int(queue._free)


def incoming(
    body: bytes, secret: str | None, receive: Callable[[], Awaitable[dict[str, Any]]] | None = None
) -> Incoming:
    """A generation request as the ASGI entry hands it to `Gateway._route`."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if secret:
        headers.append((b"authorization", f"Bearer {secret}".encode()))

    async def whole_body() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Incoming({"type": "http", "headers": headers}, receive or whole_body)
