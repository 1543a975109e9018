"""A web page attacks the gateway on loopback (issue 19, finding 10): cross-site POSTs with the
content types a browser sends without a CORS preflight (CSRF), and DNS rebinding, where the
page's own name resolves to 127.0.0.1 and the browser sends `Host: <attacker's name>`."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.security.gateway_edge import running_gateway

CHAT = "/v1/chat/completions"
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


async def post(url: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as c:
        return await c.post(path, content=BODY, headers=headers)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
@pytest.mark.parametrize("path", [CHAT, "/v1/completions", "/admin/keys"])
async def test_a_simple_cross_site_post_gets_415(
    tmp_path: Path, path: str, content_type: str
) -> None:
    async with running_gateway(tmp_path) as (url, _):
        headers = {"Content-Type": content_type} if content_type else {}
        r = await post(url, path, headers)
        assert r.status_code == 415, r.text
        assert r.json()["error"]["param"] == "Content-Type"


async def test_json_with_a_charset_passes_the_content_type_check(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as (url, _):
        r = await post(url, CHAT, {"Content-Type": "Application/JSON; charset=utf-8"})
        assert r.status_code == 404  # no such model: it got past the edge


@pytest.mark.parametrize("path", ["/v1/models", "/health", "/metrics"])
async def test_a_rebound_name_gets_400_on_reads(tmp_path: Path, path: str) -> None:
    async with running_gateway(tmp_path) as (url, port):
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get(path, headers={"Host": f"evil.example:{port}"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_host"


async def test_a_rebound_name_gets_400_on_generation(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as (url, port):
        headers = {"Host": f"evil.example:{port}", "Content-Type": "application/json"}
        r = await post(url, CHAT, headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == "Host"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "10.1.2.3", "LOCALHOST"])
async def test_loopback_names_and_ip_literals_pass(tmp_path: Path, host: str) -> None:
    async with running_gateway(tmp_path) as (url, port):
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("/v1/models", headers={"Host": f"{host}:{port}"})
        assert r.status_code == 200


async def test_configured_names_pass_and_others_do_not(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, allowed_hosts=["gateway", "gw.example.com"]) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            ok = await c.get("/v1/models", headers={"Host": "gateway:8000"})
            ok2 = await c.get("/v1/models", headers={"Host": "GW.example.com"})
            bad = await c.get("/v1/models", headers={"Host": "gateway.evil.example"})
        assert (ok.status_code, ok2.status_code, bad.status_code) == (200, 200, 400)


async def test_a_star_allows_every_name(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, allowed_hosts=["*"]) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("/v1/models", headers={"Host": "anything.example"})
        assert r.status_code == 200
