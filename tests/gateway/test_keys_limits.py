"""Keys, limits, admission and the error envelope, each through the official openai SDK."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp
import openai
import pytest

from deepfleet.gateway.keys import KeyStore
from deepfleet.gateway.limits import AdmissionQueue
from tests.gateway.conftest import MODEL, Rig

MSG = [{"role": "user", "content": "hi"}]


def client(rig: Rig, key: str | None = "none") -> openai.AsyncOpenAI:
    c = openai.AsyncOpenAI(base_url=rig.url + "/v1", api_key=key or "none", max_retries=0)
    rig.clients.append(c)
    return c


async def chat(rig: Rig, key: str | None, **kw: object) -> str:
    c = client(rig, key)
    if kw.pop("stream", False):
        s = await c.chat.completions.create(model=MODEL, messages=MSG, stream=True)  # type: ignore[arg-type]
        return "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])
    r = await c.chat.completions.create(model=MODEL, messages=MSG, **kw)  # type: ignore[call-overload]
    return str(r.choices[0].message.content)


async def test_key_lifecycle(rig: Rig) -> None:
    _, secret = rig.keys.create("alice")
    assert (await chat(rig, secret)).startswith("e")
    with pytest.raises(openai.AuthenticationError) as missing:
        await chat(rig, "dfk_nope_nope")
    assert missing.value.code == "invalid_api_key"
    rig.keys.revoke("alice")
    with pytest.raises(openai.AuthenticationError) as revoked:  # at once, no cache delay
        await chat(rig, secret)
    assert "revoked" in revoked.value.message


async def test_missing_header_is_401_once_keys_exist(rig: Rig) -> None:
    rig.keys.create("alice")
    async with (
        aiohttp.ClientSession() as s,
        s.post(rig.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSG}) as resp,
    ):
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "missing_api_key"


async def test_expired_key_is_401(rig: Rig) -> None:
    _, secret = rig.keys.create("temp", expires_at=time.time() - 1)
    with pytest.raises(openai.AuthenticationError) as info:
        await chat(rig, secret)
    assert "expired" in info.value.message


async def test_key_limited_to_other_models_is_403(rig: Rig) -> None:
    _, secret = rig.keys.create("narrow", models=("other-model",))
    with pytest.raises(openai.PermissionDeniedError) as info:
        await chat(rig, secret)
    assert info.value.code == "model_not_allowed"
    listed = await client(rig, secret).models.list()
    assert listed.data == []


async def test_rpm_limit_429_with_retry_after(rig: Rig) -> None:
    _, secret = rig.keys.create("slow", rpm=2)
    await chat(rig, secret)
    await chat(rig, secret)
    with pytest.raises(openai.RateLimitError) as info:
        await chat(rig, secret)
    assert info.value.code == "rate_limit_requests"
    assert int(info.value.response.headers["Retry-After"]) >= 1


async def test_tpm_limit_counts_usage_tokens(rig: Rig) -> None:
    # Each request reserves its worst case (body bytes / 4 = 15, no max_tokens and no known
    # context length) and settles on its usage, 3 prompt + 5 completion tokens.
    _, secret = rig.keys.create("tokens", tpm=30)
    await chat(rig, secret)  # 30 - 15 reserved, + 15 - 8 settled: 22 left
    await chat(rig, secret)  # 22 - 15 + 7: 14 left, short of the next reservation
    with pytest.raises(openai.RateLimitError) as info:
        await chat(rig, secret)
    assert info.value.code == "rate_limit_tokens"
    assert int(info.value.response.headers["Retry-After"]) >= 1


async def test_oversize_body_is_413(rig: Rig) -> None:
    big = "x" * (rig.gateway.settings.max_body_bytes + 1)
    with pytest.raises(openai.APIStatusError) as info:
        await client(rig).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": big}]
        )
    assert info.value.status_code == 413


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 500}, "n"),
        ({"extra_body": {"stream": "yes"}}, "stream"),
        ({"extra_body": {"messages": "hello"}}, "messages"),
    ],
    ids=["empty-messages", "max-tokens-0", "n-too-large", "stream-not-bool", "messages-str"],
)
async def test_bad_fields_raise_bad_request(
    rig: Rig, kwargs: dict[str, object], param: str
) -> None:
    args: dict[str, object] = {"model": MODEL, "messages": MSG, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        await client(rig).chat.completions.create(**args)  # type: ignore[call-overload]
    assert info.value.param == param


async def test_max_tokens_over_context_is_400(rig: Rig) -> None:
    rig.gateway.table.models[MODEL].max_model_len = 100
    with pytest.raises(openai.BadRequestError) as info:
        await client(rig).chat.completions.create(model=MODEL, messages=MSG, max_tokens=101)
    assert info.value.param == "max_tokens" and "context of 100" in info.value.message


@pytest.mark.parametrize(
    "rig", [{"max_in_flight": 1, "max_queue": 1, "queue_timeout_s": 0.5}], indirect=True
)
async def test_admission_queue_full_429_then_timeout_503(rig: Rig) -> None:
    for e in rig.engines:
        e.ctl.tokens, e.ctl.delay_s = 40, 0.05  # ~2 s per stream
    c = client(rig)

    async def stream() -> str:
        s = await c.chat.completions.create(model=MODEL, messages=MSG, stream=True)
        return "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])

    holder = asyncio.create_task(stream())
    await asyncio.sleep(0.2)
    waiter = asyncio.create_task(c.chat.completions.create(model=MODEL, messages=MSG))
    await asyncio.sleep(0.1)
    with pytest.raises(openai.RateLimitError) as full:
        await c.chat.completions.create(model=MODEL, messages=MSG)
    assert full.value.code == "queue_full"
    with pytest.raises(openai.InternalServerError) as timeout:
        await waiter
    assert timeout.value.status_code == 503 and timeout.value.code == "no_capacity"
    assert (await holder).count("-w") == 40


async def test_key_concurrency_limit(rig: Rig) -> None:
    for e in rig.engines:
        e.ctl.tokens, e.ctl.delay_s = 20, 0.05
    _, secret = rig.keys.create("one-at-a-time", max_concurrent=1)
    first = asyncio.create_task(chat(rig, secret, stream=True))
    await asyncio.sleep(0.2)
    with pytest.raises(openai.RateLimitError) as info:
        await chat(rig, secret)
    assert info.value.code == "concurrency_limit"
    await first
    assert (await chat(rig, secret)).startswith("e")


async def test_metrics_token(rig: Rig) -> None:
    object.__setattr__(rig.gateway.settings, "metrics_token", "s3cret")
    async with aiohttp.ClientSession() as s:
        async with s.get(rig.url + "/metrics") as resp:
            assert resp.status == 401
        async with s.get(rig.url + "/metrics", headers={"Authorization": "Bearer s3cret"}) as resp:
            assert resp.status == 200


async def test_admin_routes_need_admin_key(rig: Rig) -> None:
    _, user = rig.keys.create("user")
    _, admin = rig.keys.create("root", admin=True)
    async with aiohttp.ClientSession() as s:
        async with s.get(
            rig.url + "/admin/keys", headers={"Authorization": f"Bearer {user}"}
        ) as resp:
            assert resp.status == 403
        async with s.post(
            rig.url + "/admin/keys",
            json={"name": "bob", "rpm": 5},
            headers={"Authorization": f"Bearer {admin}"},
        ) as resp:
            assert resp.status == 201
            created = await resp.json()
    # Created and revoked through the gateway's own connection: seen at once all the same.
    assert (await chat(rig, created["secret"])).startswith("e")
    async with (
        aiohttp.ClientSession() as s,
        s.delete(
            rig.url + f"/admin/keys/{created['key']['id']}",
            headers={"Authorization": f"Bearer {admin}"},
        ) as resp,
    ):
        assert resp.status == 200
    with pytest.raises(openai.AuthenticationError):
        await chat(rig, created["secret"])


def test_key_store_version_changes_with_every_commit(tmp_path: Path) -> None:
    store, other = KeyStore(tmp_path / "keys.db"), KeyStore(tmp_path / "keys.db")
    seen = [store.version()]
    for change in (
        lambda: other.create("a"),  # another connection (the CLI, another worker)
        lambda: store.create("b"),  # this one (the admin routes)
        lambda: other.revoke("a"),
        lambda: store.revoke("b"),
    ):
        change()
        seen.append(store.version())
        assert seen[-1] != seen[-2]
        assert store.version() == seen[-1]  # and only then
    store.close()
    other.close()


async def test_admission_hands_freed_slots_to_waiters_in_order() -> None:
    adm = AdmissionQueue(max_in_flight=1, max_queue=2, timeout_s=5)
    assert adm.try_enter() is None
    assert adm.try_enter() == "wait"
    first = asyncio.create_task(adm.wait())
    await asyncio.sleep(0)
    second = asyncio.create_task(adm.wait())
    await asyncio.sleep(0)
    assert adm.waiting == 2 and adm.try_enter() == "full"
    adm.leave()
    assert await first is None and not second.done()
    adm.leave()
    assert await second is None
    adm.leave()
    assert adm.try_enter() is None  # the slot is free again


async def test_admission_wait_times_out_and_leaves_the_queue() -> None:
    adm = AdmissionQueue(max_in_flight=1, max_queue=1, timeout_s=0.05)
    assert adm.try_enter() is None
    assert adm.try_enter() == "wait"
    assert await adm.wait() == "timeout"
    assert adm.waiting == 0
    adm.leave()
    assert adm.try_enter() is None


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_is_in_the_ledger_when_the_answer_ends(rig: Rig, stream: bool) -> None:
    """SQLite: the line is written before the answer's end leaves (no sleep before reading)."""
    key, secret = rig.keys.create("billed")
    await chat(rig, secret, stream=stream)
    [row] = rig.gateway.buckets.usage()
    assert (row.key_id, row.requests) == (key.id, 1)


async def test_a_failing_ledger_write_does_not_fail_the_answer(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(rig.gateway.buckets, "record", broken)
    _, secret = rig.keys.create("billed")
    assert (await chat(rig, secret)).startswith("e")
    assert (await chat(rig, secret, stream=True)).startswith("e")
    assert caplog.text.count("usage ledger: a line not written (key billed)") == 2
