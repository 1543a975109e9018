"""Errors in the OpenAI envelope: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json

from starlette.responses import Response

MAX_MESSAGE = 1024
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    err = {
        "message": message[:MAX_MESSAGE],
        "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
        "param": param,
        "code": code,
    }
    return json.dumps({"error": err}).encode()


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        error_body(status, message, param=param, code=code),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def sse_error(message: str, code: str = "upstream_error") -> bytes:
    """The events that end a broken stream cleanly: an error event, then [DONE]."""
    payload = json.loads(error_body(502, message, code=code))
    return f"data: {json.dumps(payload)}\n\ndata: [DONE]\n\n".encode()
