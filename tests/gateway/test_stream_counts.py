"""StreamCounts: three passes per read, the answer pattern narrowed to the stream's own JSON
spacing, and the usage event found once at the end among the stream's last chunks."""

from __future__ import annotations

import json

import pytest

from deepfleet.gateway.stream import StreamCounts


def event(obj: object, spaced: bool = False) -> bytes:
    text = json.dumps(obj) if spaced else json.dumps(obj, separators=(",", ":"))
    return b"data: %s\n\n" % text.encode()


def delta(**fields: str) -> dict[str, object]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": fields}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5}}
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize("spaced", [False, True])
def test_counts_every_delta_in_either_spacing(spaced: bool) -> None:
    counts = StreamCounts()
    counts.add(event(delta(role="assistant", content=""), spaced))
    counts.add(event(delta(reasoning="a"), spaced) + event(delta(reasoning="b"), spaced))
    for _ in range(3):
        counts.add(event(delta(content="x"), spaced))
    assert (counts.events, counts.reasoning, counts.content) == (6, 2, 4)
    assert counts.output_tokens == 6  # no usage event: one per delta


def test_a_stream_that_shows_both_spacings_keeps_counting_both() -> None:
    counts = StreamCounts()
    counts.add(event(delta(content="a")) + event(delta(content="b"), spaced=True))
    counts.add(event(delta(content="c"), spaced=True))
    counts.add(event(delta(content="d")))
    assert counts.content == 4


@pytest.mark.parametrize(
    "chunks",
    [
        [event(delta(content="x")) + event(USAGE) + DONE],  # usage and [DONE] in one read
        [event(delta(content="x")) + event(USAGE), DONE],  # [DONE] in a read of its own
        [event(delta(content="x")), event(USAGE), DONE],
    ],
)
def test_usage_event_is_found_at_the_end(chunks: list[bytes]) -> None:
    counts = StreamCounts()
    for chunk in chunks:
        counts.add(chunk)
    counts.usage_from(chunks[-2:])
    assert (counts.prompt_tokens, counts.completion_tokens, counts.output_tokens) == (7, 5, 5)


def test_continuous_usage_stats_take_the_last_event() -> None:
    def with_usage(n: int) -> bytes:
        usage = {"prompt_tokens": 7, "completion_tokens": n}
        return event({**delta(content="x"), "usage": usage})

    chunks = [with_usage(1) + with_usage(2), with_usage(3), with_usage(4) + DONE]
    counts = StreamCounts()
    counts.usage_from(chunks[-2:])
    assert counts.completion_tokens == 4


def test_a_broken_usage_event_is_skipped() -> None:
    counts = StreamCounts()
    counts.usage_from([event(USAGE) + b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n'])
    assert (counts.prompt_tokens, counts.completion_tokens) == (7, 5)
    nothing = StreamCounts()
    nothing.usage_from([event(delta(content="x")), DONE])
    assert nothing.completion_tokens is None


def test_usage_with_event_text_in_the_last_delta() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 9}
    last = event({**delta(content="data: {}\n\ndata: "), "usage": usage})
    counts = StreamCounts()
    counts.usage_from([event(delta(content="x")) + last + DONE])
    assert counts.completion_tokens == 9
