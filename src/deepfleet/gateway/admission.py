"""Admission: the checks a generation request passes, in order, before it is forwarded.

1. declared body size, from Content-Length before the body is read (413 request_too_large)
2. the caller's key (401)
3. the key's requests in flight (429 concurrency_limit), before the body: per worker on
   SQLite, across every gateway on PostgreSQL (store/)
4. the key's requests/min (429 rate_limit_requests + Retry-After), before the body
5. body size as read (413 request_too_large)
6. the request's fields (400), its model (404 model_not_found), values against the model (400)
7. the key's models (403 model_not_allowed)
8. the key's tokens/min: the request's worst case is reserved (429 rate_limit_tokens)
9. the worker's admission queue (429 queue_full, 503 no_capacity after waiting)

Each check is a small method that returns a refusal (an OpenAI error response, counted in
`deepfleet_rejected` by reason) or None; the ones that find something (the caller, the
fields, the reservation) return it or a refusal. Step 3 takes the key's slot, 8 a share of
its token budget, 9 an upstream slot. A request refused or failing after step 3 gives back
what it holds (`give_back`); a forwarded one gives everything back through the callback
`finisher` builds, once, whatever way it ends; its accounting (later.py) settles the
reservation on the usage the engine reported.

Everything here runs on every request: a check makes no object unless it refuses, and awaits
only where the state backend may need a round trip (a limited key whose PostgreSQL lease ran
out, store/leases.py; SQLite and a live lease answer without suspending) or the request must
queue. limits.py and auth.py give the measured reasons of their shapes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.responses import Response

from deepfleet.gateway import requests
from deepfleet.gateway.auth import Authenticator, AuthError, Principal
from deepfleet.gateway.errors import error_response
from deepfleet.gateway.keys import ApiKey
from deepfleet.gateway.later import Later
from deepfleet.gateway.limits import AdmissionQueue
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.relay import Commit, Outcome
from deepfleet.gateway.settings import GatewaySettings
from deepfleet.gateway.store.base import Limits, Verdict
from deepfleet.routing.endpoints import EndpointTable

log = logging.getLogger(__name__)


class Admission:
    def __init__(
        self,
        table: EndpointTable,
        auth: Authenticator,
        buckets: Limits,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        later: Later,
    ) -> None:
        self.table = table
        self.auth = auth
        self.buckets = buckets
        self.settings = settings
        self.metrics = metrics
        self.later = later
        self.queue = AdmissionQueue(
            settings.max_in_flight, settings.max_queue, settings.queue_timeout_s
        )

    def _reject(
        self,
        reason: str,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> Response:
        self.metrics.rejected.labels(reason).inc()
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return error_response(status, message, param=param, code=code, headers=headers)

    def _too_large(self) -> Response:
        limit = self.settings.max_body_bytes
        return self._reject(
            "too_large", 413, f"request body is over {limit} bytes", code="request_too_large"
        )

    # -- the checks, in order ----------------------------------------------------------------
    def declared_size(self, content_length: str | None) -> Response | None:
        if (
            content_length
            and content_length.isdigit()
            and int(content_length) > self.settings.max_body_bytes
        ):
            return self._too_large()
        return None

    def key(self, authorization: str | None) -> Principal | Response:
        who = self.auth.authenticate(authorization)
        if isinstance(who, AuthError):
            return self._reject("auth", who.status, who.message, code=who.code)
        return who

    def fields(self, path: str, body: bytes) -> requests.Fields | Response:
        if len(body) > self.settings.max_body_bytes:
            return self._too_large()
        try:
            fields = requests.parse(path, body)
            entry = self.table.models.get(fields.model)
            if entry is None:
                return self._reject(
                    "unknown_model",
                    404,
                    f"The model `{fields.model}` does not exist.",
                    param="model",
                    code="model_not_found",
                )
            requests.check(fields, entry.max_model_len, self.settings.max_prompt_batch)
        except requests.RequestError as exc:
            return self._reject("invalid", 400, exc.message, param=exc.param, code=exc.code)
        return fields

    def key_models(self, who: Principal, model: str) -> Response | None:
        if who.key is not None and not who.key.allows(model):
            return self._reject(
                "forbidden_model",
                403,
                f"this API key may not use `{model}`",
                param="model",
                code="model_not_allowed",
            )
        return None

    def _unavailable(self, v: Verdict) -> Response | None:
        if not v.unavailable:
            return None
        return self._reject(
            "state_unavailable",
            503,
            "the gateway cannot reach its state database to check this key's limits",
            code="state_unavailable",
            retry_after=v.retry_after_s,
        )

    async def requests_per_minute(self, key: ApiKey | None) -> Response | None:
        if key is None or not key.rpm:
            return None
        v = await self.buckets.take(key.id, "rpm", key.rpm, cost=1, need=1)
        if v.allowed:
            return None
        return self._unavailable(v) or self._reject(
            "rpm",
            429,
            f"rate limit: {key.rpm} requests per minute",
            code="rate_limit_requests",
            retry_after=v.retry_after_s,
        )

    async def tokens_per_minute(
        self, key: ApiKey | None, fields: requests.Fields, body_bytes: int
    ) -> int | Response:
        """The tokens reserved for the request's worst case (0 without a tokens/min limit),
        or the refusal when they do not fit in the key's bucket now."""
        if key is None or not key.tpm:
            return 0
        self.later.run()  # usage of finished requests is settled before it is checked
        entry = self.table.models.get(fields.model)
        worst = requests.worst_case_tokens(
            fields, body_bytes, entry.max_model_len if entry else None
        )
        if worst > key.tpm:
            return self._reject(
                "tpm",
                429,
                f"this request may use up to {worst} tokens, more than this API key's "
                f"{key.tpm} tokens per minute: lower `max_tokens`, `n` or the prompt",
                param="max_tokens",
                code="rate_limit_tokens",
            )
        v = await self.buckets.take(key.id, "tpm", key.tpm, cost=worst, need=max(worst, 1))
        if v.allowed:
            return worst
        return self._unavailable(v) or self._reject(
            "tpm",
            429,
            f"rate limit: {key.tpm} tokens per minute",
            code="rate_limit_tokens",
            retry_after=v.retry_after_s,
        )

    def _settle(self, key: ApiKey | None, tokens: int) -> None:
        """Debit `tokens` more from the key's tokens/min bucket (a refund when negative)."""
        if key is not None and key.tpm and tokens:
            self.buckets.settle(key.id, "tpm", key.tpm, tokens)

    async def enter_key(self, key: ApiKey | None) -> Response | None:
        """Take one of the key's concurrent slots (`give_back` or the finisher returns it)."""
        if key is None or key.max_concurrent is None:
            return None
        limit = key.max_concurrent
        if await self.buckets.enter(key.id, limit):
            return None
        return self._reject(
            "key_concurrency",
            429,
            f"this API key already has {limit} requests in flight",
            code="concurrency_limit",
            retry_after=1,
        )

    def give_back(self, key: ApiKey | None, reserved: int) -> None:
        """What a request refused (or failing) after step 3 holds: its key's slot and the
        tokens reserved for it."""
        self._leave(key)
        self._settle(key, -reserved)

    def _leave(self, key: ApiKey | None) -> None:
        if key is not None and key.max_concurrent is not None:
            self.buckets.leave(key.id, key.max_concurrent)

    async def queued(self, verdict: str) -> Response | None:
        """After `queue.try_enter()` found no free slot (its `verdict`, "wait" or "full"):
        None once a slot is taken, else the refusal (the caller gives back what it holds)."""
        if verdict == "wait":
            self.metrics.queue_depth.inc()
            try:
                timed_out = await self.queue.wait()
            finally:
                self.metrics.queue_depth.dec()
            if timed_out is None:
                return None
            waited = self.settings.queue_timeout_s
            return self._reject(
                "no_capacity",
                503,
                f"no capacity: waited {waited:g}s for an upstream slot",
                code="no_capacity",
                retry_after=1,
            )
        return self._reject(
            "queue_full",
            429,
            "the gateway queue is full; retry shortly",
            code="queue_full",
            retry_after=1,
        )

    # -- after admission ---------------------------------------------------------------------
    def finisher(
        self, model: str, who: Principal, body_bytes: int, reserved: int
    ) -> Callable[[Outcome], None]:
        """The callback an admitted request calls with its outcome: the first call gives its
        admission slot and its key's slot back at once, later calls do nothing; metrics and
        usage wait (later.py)."""
        key = who.key
        finished = False

        def done(outcome: Outcome) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            self.queue.leave()
            self._leave(key)
            self.later.add(self.account, model, who.name, key, body_bytes, reserved, outcome)

        return done

    def committer(self, model: str, who: Principal, body_bytes: int) -> Commit | None:
        """What a request with a key calls with its usage before its answer's end leaves: the
        line goes to the ledger at once (SQLite writes it; PostgreSQL queues it for the next
        group commit and the answer waits for that commit, relay.py `committed`)."""
        key = who.key
        if key is None:
            return None
        record = self.buckets.record_durably

        def commit(prompt: int | None, output: int) -> asyncio.Future[None] | None:
            tokens = prompt if prompt is not None else body_bytes // 4
            try:
                return record(key.id, model, tokens, output)
            except Exception:  # the answer is not failed for its bookkeeping
                log.exception("usage ledger: a line not written (key %s)", key.name)
                return None

        return commit

    def account(
        self,
        model: str,
        key_name: str,
        key: ApiKey | None,
        body_bytes: int,
        reserved: int,
        outcome: Outcome,
    ) -> None:
        """Metrics of a finished request; its usage settles the tokens reserved for it."""
        self.metrics.finished(model, outcome.status, key_name).inc()
        prompt = outcome.prompt_tokens if outcome.prompt_tokens is not None else body_bytes // 4
        mm = self.metrics.of(model)
        mm.prompt_tokens.inc(prompt)
        mm.output_tokens.inc(outcome.output_tokens)
        self._settle(key, prompt + outcome.output_tokens - reserved)
        if key is not None and not outcome.recorded:
            self.buckets.record(key.id, model, prompt, outcome.output_tokens)
