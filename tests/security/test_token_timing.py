"""Attack: guess the metrics token byte by byte from how long the compare takes. The gateway's
token compares go through hmac.compare_digest (a timing test would be too flaky to keep; this
asserts the constant-time compare is on the path)."""

from __future__ import annotations

import hmac

import aiohttp
import pytest

from tests.gateway.conftest import Rig


@pytest.mark.parametrize("rig", [{"metrics_token": "s3cret"}], indirect=True)
@pytest.mark.parametrize("path", ["/metrics", "/sd/targets", "/metrics/fleet"])
async def test_metrics_token_is_compared_in_constant_time(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    async with aiohttp.ClientSession() as s:
        async with s.get(rig.url + path, headers={"Authorization": "Bearer guess"}) as r:
            assert r.status == 401
        async with s.get(rig.url + path, headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200
    assert (b"Bearer guess", b"Bearer s3cret") in calls
