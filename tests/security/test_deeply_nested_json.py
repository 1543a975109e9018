"""Attack: a body of deeply nested JSON arrays makes the decoder recurse until RecursionError,
which the gateway answered 500 with a traceback in its log. It is a client error: 400."""

from __future__ import annotations

import json

import aiohttp

from tests.gateway.conftest import MODEL, Rig

DEEP = b"[" * 100_000 + b"]" * 100_000


async def test_deeply_nested_body_is_400(rig: Rig) -> None:
    bodies = {
        "/v1/chat/completions": b'{"model":"%s","messages":[{"content":%s}]}'
        % (MODEL.encode(), DEEP),
        "/v1/completions": b'{"model":"%s","prompt":%s}' % (MODEL.encode(), DEEP),
    }
    async with aiohttp.ClientSession() as s:
        for path, data in bodies.items():
            headers = {"Content-Type": "application/json"}
            async with s.post(rig.url + path, data=data, headers=headers) as r:
                assert r.status == 400, path
                error = json.loads(await r.read())["error"]
                assert error["type"] == "invalid_request_error"
                assert "body" in error["message"]
