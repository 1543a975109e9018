"""What the simulated model says: deterministic text, R1-style reasoning first when the model
reasons (a DeepSeek-R1 or a distill).

An R1 answer is `reasoning </think> answer`; with a reasoning parser (vLLM's
`--reasoning-parser deepseek_r1`) the reasoning streams in `delta.reasoning` and the answer in
`delta.content`, without one everything is content. Token texts come from the engine's tokenizer,
so usage counts and KV block contents match what that tokenizer would produce.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from deepfleet.sim.tokenizer import Tokenizer

REASONING = (
    "Okay, let me think about this step by step. The user is asking a question, so first I "
    "should make sure I understand what is being asked. Then I can recall the relevant facts, "
    "check them against each other, and consider whether there is more than one reasonable "
    "reading. Hmm, wait, I should also double check the details before I answer. Alright, "
    "that seems consistent, so I can write a clear and short reply. "
)
ANSWER = (
    "Here is a clear answer to your question. This reply comes from the deepfleet simulator, a "
    "test double that follows the engine contract of vLLM; its words carry no meaning, but its "
    "timing, token counts and cache behaviour follow the model and hardware it simulates. "
)
THINK_END = "</think>"
REASONING_SHARE = 0.6
MIN_NATURAL, NATURAL_SPAN = 48, 400


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    text: str
    reasoning: bool


@dataclass(frozen=True, slots=True)
class OutputPlan:
    """How many tokens a request gets, why it stops, and where in the canned text it starts."""

    length: int
    finish_reason: str
    offset: int
    reasoning_tokens: int


class OutputModel:
    def __init__(self, tokenizer: Tokenizer, reasons: bool) -> None:
        self.reasons = reasons
        self._reasoning = _tokens(tokenizer, REASONING, reasoning=True)
        self._answer = _tokens(tokenizer, ANSWER, reasoning=False)
        end_ids = tokenizer.encode(THINK_END)
        self._think_end = Token(end_ids[0] if end_ids else 0, THINK_END, reasoning=False)

    def plan(self, prompt_ids: Sequence[int], max_tokens: int, ignore_eos: bool) -> OutputPlan:
        seed = zlib.crc32(bytes(str(prompt_ids[-64:]), "ascii"))
        natural = MIN_NATURAL + seed % NATURAL_SPAN
        length = max_tokens if ignore_eos else min(max_tokens, natural)
        finish = "stop" if length == natural and not ignore_eos else "length"
        reasoning = int(length * REASONING_SHARE) if self.reasons and length > 2 else 0
        return OutputPlan(max(length, 1), finish, seed, reasoning)

    def token(self, plan: OutputPlan, index: int) -> Token:
        if index < plan.reasoning_tokens:
            return self._reasoning[(plan.offset + index) % len(self._reasoning)]
        if plan.reasoning_tokens and index == plan.reasoning_tokens:
            return self._think_end
        return self._answer[(plan.offset + index) % len(self._answer)]


def _tokens(tokenizer: Tokenizer, text: str, reasoning: bool) -> list[Token]:
    return [Token(i, tokenizer.decode(i), reasoning) for i in tokenizer.encode(text)]
