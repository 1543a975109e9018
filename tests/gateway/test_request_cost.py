"""The worst-case token cost admission reserves for a request (requests.worst_case_tokens)."""

from __future__ import annotations

from typing import Any

import pytest

from deepfleet.gateway.requests import CompletionFields, worst_case_tokens
from tests.gateway.conftest import MODEL


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "n", "context", "output"),
    [
        ("hi", 10, 3, None, 30),
        (["a", "b"], 10, 3, None, 60),  # a batch: every prompt answered n times
        ([1, 2, 3], 10, 1, None, 10),  # one tokenized prompt
        ([[1], [2]], 10, 1, None, 20),
        ("hi", None, 2, 4096, 8192),  # no max_tokens: the context length
        ("hi", None, 2, None, 0),
    ],
)
def test_worst_case_tokens(
    prompt: Any, max_tokens: int | None, n: int, context: int | None, output: int
) -> None:
    fields = CompletionFields(model=MODEL, prompt=prompt, max_tokens=max_tokens, n=n)
    assert worst_case_tokens(fields, 400, context) == 100 + output
