"""What the gateway reads from a request, validated with msgspec: the routing fields and the
few whose errors should not cost an engine round trip. Unknown fields pass through untouched.

`worst_case_tokens` is what a request may cost a key's tokens/min budget at most; admission
reserves it before forwarding (admission.py) and settles on the usage the engine reports."""

from __future__ import annotations

from typing import Any

import msgspec

MAX_N = 128
# JSON Schema's "integer" admits 1.0, and so do OpenAI and vLLM: accept integral floats.
Number = int | float


class ChatFields(msgspec.Struct):
    model: str
    messages: list[dict[str, Any]]
    stream: bool | None = None
    max_tokens: Number | None = None
    max_completion_tokens: Number | None = None
    n: Number | None = None
    stream_options: dict[str, Any] | None = None
    reasoning_cap: Number | None = None  # deepfleet extension: cap on thinking tokens


class CompletionFields(msgspec.Struct):
    model: str
    prompt: str | list[Any]
    stream: bool | None = None
    max_tokens: Number | None = None
    n: Number | None = None
    stream_options: dict[str, Any] | None = None


Fields = ChatFields | CompletionFields


class RequestError(Exception):
    def __init__(self, message: str, param: str | None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "/v1/chat/completions": msgspec.json.Decoder(ChatFields),
    "/v1/completions": msgspec.json.Decoder(CompletionFields),
}


def parse(path: str, body: bytes) -> Fields:
    """Decode the fields the gateway reads; raises RequestError naming the parameter."""
    try:
        fields: Fields = DECODERS[path].decode(body)
    except msgspec.ValidationError as exc:
        raise RequestError(f"invalid request: {exc}", _param_of(str(exc))) from None
    except msgspec.DecodeError:
        raise RequestError("request body is not valid JSON", None, "invalid_json") from None
    except RecursionError:  # msgspec's own depth limit on nested arrays/objects
        raise RequestError(TOO_DEEP, None, "invalid_json") from None
    return fields


TOO_DEEP = "request body nests JSON arrays/objects too deeply"


def prompt_batch(fields: Fields) -> int:
    """How many prompts the request holds: a /v1/completions list of strings or of token-id
    lists is a batch (each answered `n` times); one token-id list is one prompt."""
    if isinstance(fields, CompletionFields) and isinstance(fields.prompt, list):
        prompt = fields.prompt
        return 1 if prompt and isinstance(prompt[0], int) else len(prompt)
    return 1


def worst_case_tokens(fields: Fields, body_bytes: int, max_model_len: int | None) -> int:
    """Prompt tokens estimated as body bytes / 4, plus the most it may generate: `max_tokens`
    (or the model's context length when absent; 0 when that is unknown too) times `n` times
    the prompt batch."""
    out = getattr(fields, "max_completion_tokens", None) or fields.max_tokens or max_model_len
    if not out:
        return body_bytes // 4
    return body_bytes // 4 + int(out) * int(fields.n or 1) * prompt_batch(fields)


def check(fields: Fields, max_model_len: int | None, max_prompts: int) -> None:
    """Values the engine would refuse anyway, refused here without the round trip, and
    prompt batches over `max_prompts` (their cost would dwarf a key's token budget)."""
    if isinstance(fields, ChatFields):
        if not fields.messages:
            raise RequestError("`messages` must hold at least one message", "messages")
        if fields.reasoning_cap is not None and fields.reasoning_cap < 0:
            raise RequestError("`reasoning_cap` must be at least 0", "reasoning_cap")
    elif fields.prompt in ("", []):
        raise RequestError("`prompt` must not be empty", "prompt")
    elif (batch := prompt_batch(fields)) > max_prompts:
        raise RequestError(
            f"`prompt` holds {batch} prompts; at most {max_prompts} per request", "prompt"
        )
    for name in ("n", "max_tokens", "max_completion_tokens", "reasoning_cap"):
        value = getattr(fields, name, None)
        if value is not None and (isinstance(value, float) and not value.is_integer()):
            raise RequestError(f"`{name}` must be an integer, got {value}", name)
    if fields.n is not None and not 1 <= fields.n <= MAX_N:
        raise RequestError(f"`n` must be between 1 and {MAX_N}, got {fields.n:g}", "n")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(fields, name, None)
        if value is None:
            continue
        if value < 1:
            raise RequestError(f"`{name}` must be at least 1, got {value}", name)
        if max_model_len is not None and value > max_model_len:
            raise RequestError(
                f"`{name}` is {value}, more than this model's context of {max_model_len} tokens",
                name,
            )


def _param_of(message: str) -> str | None:
    """msgspec says `... - at `$.messages[0]``; OpenAI names the top-level parameter."""
    marker = "at `$."
    if marker in message:
        return message.split(marker, 1)[1].split("`", 1)[0].split("[", 1)[0].split(".", 1)[0]
    if "missing required field `" in message:
        return message.split("missing required field `", 1)[1].split("`", 1)[0]
    return None
