"""Admission: the checks a generation request passes, in order, before it is forwarded.

1. declared body size, from Content-Length before the body is read (413 request_too_large)
2. the caller's key (401)
3. body size as read (413 request_too_large)
4. the request's fields (400), its model (404 model_not_found), values against the model (400)
5. the key's models (403 model_not_allowed)
6. the key's requests/min, then tokens/min (429 + Retry-After)
7. the key's requests in flight in this worker (429 concurrency_limit)
8. the worker's admission queue (429 queue_full, 503 no_capacity after waiting)

Each check is a small method that returns a refusal (an OpenAI error response, counted in
`deepfleet_rejected` by reason) or None; the two that find something (the caller, the
fields) return it or a refusal. Steps 7 and 8 take a slot. A request refused after step 7
gives its key's slot back (`leave_key`); a forwarded one gives both back through the callback
`finisher` builds, which also queues its accounting (later.py).

Everything here runs on every request: no await unless the request must queue, and a check
makes no object unless it refuses (limits.py and auth.py give the measured reasons of their
shapes).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response

from deepfleet.gateway import requests
from deepfleet.gateway.auth import Authenticator, AuthError, Principal
from deepfleet.gateway.errors import error_response
from deepfleet.gateway.keys import ApiKey
from deepfleet.gateway.later import Later
from deepfleet.gateway.limits import AdmissionQueue, KeyConcurrency, TokenBuckets
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.relay import Outcome
from deepfleet.gateway.settings import GatewaySettings
from deepfleet.routing.endpoints import EndpointTable


class Admission:
    def __init__(
        self,
        table: EndpointTable,
        auth: Authenticator,
        buckets: TokenBuckets,
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
        self.concurrency = KeyConcurrency()
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

    def body_size(self, body: bytes) -> Response | None:
        return self._too_large() if len(body) > self.settings.max_body_bytes else None

    def fields(self, path: str, body: bytes) -> requests.Fields | Response:
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
            requests.check(fields, entry.max_model_len)
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

    def requests_per_minute(self, key: ApiKey | None) -> Response | None:
        if key is None or not key.rpm:
            return None
        v = self.buckets.take(key.id, "rpm", key.rpm, cost=1, need=1)
        if v.allowed:
            return None
        return self._reject(
            "rpm",
            429,
            f"rate limit: {key.rpm} requests per minute",
            code="rate_limit_requests",
            retry_after=v.retry_after_s,
        )

    def tokens_per_minute(self, key: ApiKey | None) -> Response | None:
        if key is None or not key.tpm:
            return None
        self.later.run()  # usage of finished requests is debited before it is checked
        v = self.buckets.take(key.id, "tpm", key.tpm, cost=0, need=1e-9)
        if v.allowed:
            return None
        return self._reject(
            "tpm",
            429,
            f"rate limit: {key.tpm} tokens per minute",
            code="rate_limit_tokens",
            retry_after=v.retry_after_s,
        )

    def enter_key(self, key: ApiKey | None) -> Response | None:
        """Take one of the key's slots in this worker (give it back with `leave_key`)."""
        limit = key.max_concurrent if key else None
        if self.concurrency.try_enter(key.id if key else "", limit):
            return None
        return self._reject(
            "key_concurrency",
            429,
            f"this API key already has {limit} requests in flight",
            code="concurrency_limit",
            retry_after=1,
        )

    def leave_key(self, key: ApiKey | None) -> None:
        self.concurrency.leave(key.id if key else "")

    async def queued(self, verdict: str, key: ApiKey | None) -> Response | None:
        """After `queue.try_enter()` found no free slot (its `verdict`, "wait" or "full"):
        None once a slot is taken, else the refusal, with the key's slot given back."""
        try:
            if verdict == "wait":
                self.metrics.queue_depth.inc()
                timed_out = await self.queue.wait()
                self.metrics.queue_depth.dec()
                if timed_out is None:
                    return None
                waited = self.settings.queue_timeout_s
                refusal = self._reject(
                    "no_capacity",
                    503,
                    f"no capacity: waited {waited:g}s for an upstream slot",
                    code="no_capacity",
                    retry_after=1,
                )
            else:
                refusal = self._reject(
                    "queue_full",
                    429,
                    "the gateway queue is full; retry shortly",
                    code="queue_full",
                    retry_after=1,
                )
        except BaseException:
            self.leave_key(key)
            raise
        self.leave_key(key)
        return refusal

    # -- after admission ---------------------------------------------------------------------
    def finisher(self, model: str, who: Principal, body_bytes: int) -> Callable[[Outcome], None]:
        """The callback an admitted request calls once with its outcome: its admission slot
        and its key's slot are given back at once; metrics and usage wait (later.py)."""
        key = who.key
        key_id = key.id if key else ""

        def done(outcome: Outcome) -> None:
            self.queue.leave()
            self.concurrency.leave(key_id)
            self.later.add(self.account, model, who.name, key, body_bytes, outcome)

        return done

    def account(
        self, model: str, key_name: str, key: ApiKey | None, body_bytes: int, outcome: Outcome
    ) -> None:
        """Metrics and tokens/min usage of a finished request."""
        self.metrics.finished(model, outcome.status, key_name).inc()
        prompt = outcome.prompt_tokens if outcome.prompt_tokens is not None else body_bytes // 4
        mm = self.metrics.of(model)
        mm.prompt_tokens.inc(prompt)
        mm.output_tokens.inc(outcome.output_tokens)
        if key is not None and key.tpm:
            self.buckets.take(
                key.id, "tpm", key.tpm, cost=prompt + outcome.output_tokens, need=-1e18
            )
