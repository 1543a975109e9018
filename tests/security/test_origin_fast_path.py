"""The generation routes' inline pass of the browser checks (asgi.py reads origin.py's verdict
cache): a cached verdict never lets through what the full check refuses (issue 19, finding 10).
Each request is sent twice, so the second meets the verdict the first cached."""

from __future__ import annotations

import httpx
import pytest
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp

from deepfleet.gateway.asgi import GatewayASGI, Incoming
from deepfleet.gateway.origin import Origins

CHAT = "/v1/chat/completions"


async def handler(incoming: Incoming, path: str) -> Response:
    return PlainTextResponse("forwarded")


def gateway(allowed: tuple[str, ...] = ()) -> GatewayASGI:
    rest: ASGIApp = PlainTextResponse("rest")
    return GatewayASGI(handler, frozenset({CHAT}), rest, Origins(allowed))


async def twice(app: GatewayASGI, headers: dict[str, str]) -> list[int]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        return [(await c.post(CHAT, content=b"{}", headers=headers)).status_code for _ in "ab"]


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ({"Host": "127.0.0.1:8000", "Content-Type": "application/json"}, 200),
        ({"Host": "gw.internal", "Content-Type": "application/json"}, 200),
        ({"Host": "evil.example:8000", "Content-Type": "application/json"}, 400),
        ({"Host": "localhost", "Content-Type": "text/plain"}, 415),
        ({"Host": "localhost", "Content-Type": "application/json; charset=utf-8"}, 200),
        ({"Host": "evil.example", "Content-Type": "text/plain"}, 400),
    ],
)
async def test_a_second_request_gets_the_first_ones_answer(
    headers: dict[str, str], want: int
) -> None:
    assert await twice(gateway(("gw.internal",)), headers) == [want, want]


async def test_a_good_host_cached_does_not_pass_a_form_post() -> None:
    app = gateway()
    json = {"Host": "localhost:8000", "Content-Type": "application/json"}
    form = {"Host": "localhost:8000", "Content-Type": "application/x-www-form-urlencoded"}
    assert await twice(app, json) == [200, 200]
    assert app.origins.verdicts == {b"localhost:8000": True}
    assert await twice(app, form) == [415, 415]


async def test_a_bad_host_stays_refused_with_the_exact_json_type() -> None:
    app = gateway()
    bad = {"Host": "evil.example", "Content-Type": "application/json"}
    assert await twice(app, bad) == [400, 400]
    assert app.origins.verdicts == {b"evil.example": False}
