"""A coarse simulated engine for long fleet runs (a SIMULATOR: no engine runs).

`sim/engine.py` runs every decode step as an event, which is right for one engine and
seconds of traffic but too slow for 64 replicas over hours. This engine advances in ticks of
`dt` (0.1 s in the autoscaling benchmark) and counts decode steps as a fluid: in a tick its
step time is the profile's `step_s` at the current batch and KV context, so the tick holds
`dt / step` steps; a request admitted at step count `g0` produces its first token at the
first step after its prefill and finishes at step `g0 + output tokens`, which a heap ordered
by that step finds in O(log n). What it keeps from the step model: FCFS admission bounded by
max_num_seqs and the KV cache (prompt + output tokens reserved), prefill time (compute bound)
delaying the tick's decode steps, step time growing with batch and context, and the host
floor per sequence. What it loses: which step inside a tick a token lands on (TTFT and ITL
are interpolated inside the tick) and chunked prefill's interleaving (a tick's prefills run
before its decodes).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable

from deepfleet.sim.profile import LatencyProfile


class Request:
    __slots__ = ("arrival", "done", "first", "input_tokens", "output_tokens")

    def __init__(self, arrival: float, input_tokens: int, output_tokens: int) -> None:
        self.arrival = arrival
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.first: float | None = None
        self.done: float | None = None

    @property
    def ttft(self) -> float:
        assert self.first is not None
        return self.first - self.arrival

    @property
    def itl(self) -> float:
        """Mean inter-token time after the first token."""
        assert self.first is not None and self.done is not None
        return (self.done - self.first) / max(1, self.output_tokens - 1)


class FluidEngine:
    def __init__(self, profile: LatencyProfile, *, max_seqs: int, kv_tokens: int) -> None:
        self.profile = profile
        self.max_seqs = max_seqs
        self.kv_tokens = kv_tokens
        self.waiting: deque[Request] = deque()
        self._running: list[tuple[float, int, Request]] = []  # (finish step, seq, request)
        self._seq = itertools.count()
        self.steps = 0.0  # decode steps so far (fractional)
        self.context = 0.0  # KV tokens the running sequences hold
        self.kv_used = 0
        self._debt = 0.0  # prefill time that spilled past the last tick
        self.last_step = 0.0  # the last tick's decode step: its streams' inter-token time

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def load(self) -> int:
        return len(self._running) + len(self.waiting)

    @property
    def kv_usage(self) -> float:
        return self.kv_used / self.kv_tokens

    @property
    def idle(self) -> bool:
        return not self._running and not self.waiting

    def submit(self, request: Request) -> None:
        self.waiting.append(request)

    def tick(
        self,
        t: float,
        dt: float,
        finished: Callable[[Request], None],
        started: Callable[[Request], None],
    ) -> None:
        """Advance from `t` to `t + dt`; `started` gets each request admitted (its first
        token's time known), `finished` each that completes."""
        if not self._running and not self.waiting:
            self._debt = max(0.0, self._debt - dt)
            self.last_step = 0.0
            return
        prefill = self._admit(t, started)
        used = self._debt + prefill
        avail = dt - used
        if avail <= 0:
            self._debt = -avail
            return
        self._debt = 0.0
        b = len(self._running)
        if not b:
            return
        step = self.last_step = self.profile.step_s(b, int(self.context), 0)
        n = avail / step
        start, begin = self.steps, t + used
        self.steps += n
        self.context += n * b
        while self._running and self._running[0][0] <= self.steps:
            fin, _, r = heapq.heappop(self._running)
            r.done = begin + (fin - start) * step
            if r.first is None or r.first > r.done:
                r.first = r.done
            self.kv_used -= r.input_tokens + r.output_tokens
            self.context -= r.input_tokens + r.output_tokens
            finished(r)
        if not self._running:
            self.context = 0.0

    def _admit(self, t: float, started: Callable[[Request], None]) -> float:
        """Admit what fits (FCFS); returns the prefill seconds the admitted prompts take."""
        prefill = 0.0
        b = len(self._running)
        step = self.profile.step_s(max(1, b), int(self.context), 0)
        while self.waiting and len(self._running) < self.max_seqs:
            r = self.waiting[0]
            need = r.input_tokens + r.output_tokens
            if self._running and self.kv_used + need > self.kv_tokens:
                break
            self.waiting.popleft()
            prefill += self.profile.prefill_s(r.input_tokens)
            r.first = max(r.arrival, t) + self._debt + prefill + step
            self.kv_used += need
            self.context += r.input_tokens
            heapq.heappush(self._running, (self.steps + r.output_tokens, next(self._seq), r))
            started(r)
        return prefill
