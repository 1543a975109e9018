"""A corpus of bad requests against a live gateway (issue 19's acceptance item).

Every request is written on a raw socket, so nothing is normalized on the way: malformed and
deeply nested JSON, wrong types, wrong content types, huge heads and bodies, path tricks,
forged Host headers, slow senders, and clients that go away at every phase of a request
(mid-head, mid-body, before the answer, mid-stream). Each answer is classified by status; a
case that neither gets an answer nor sees the connection close within its budget (the
gateway's deadlines plus slack) is a hang.

At the end the gateway's admission and in-flight gauges (every `deepfleet_*` gauge whose name
says in_flight, admission or queue) and the engine's `vllm:num_requests_running` must come back
to 0: a request the gateway forgot, or an engine request nobody aborted, shows there.

    python benchmarks/security/bad_input_corpus.py --gateway http://127.0.0.1:8000 \\
        --engine http://127.0.0.1:8100 --key sk-... --json

Exit status 1 when an answer was 500, a case hung, or a gauge stayed above 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
GAUGE_WORDS = ("in_flight", "admission", "queue")
GENERATION_S = 60.0  # what a short generation may take a busy CPU engine
BIG_TRANSFER_S = 30.0  # what a 64 MiB upload may take this client on a busy machine


@dataclass
class Target:
    host: str
    port: int
    key: str | None
    model: str
    deadline_s: float  # longest a case may take before it counts as a hang

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Outcome:
    status: int | None = None  # None: no answer (closed, or the client left on purpose)
    note: str = ""
    hang: bool = False
    seconds: float = 0.0


Run = Callable[[Target], Awaitable[Outcome]]


@dataclass
class Case:
    category: str
    name: str
    run: Run
    alone: bool = False  # big transfers: run one at a time after the rest, with more time
    generates: bool = False  # may reach the engine: its generation time adds to the budget


@dataclass
class Report:
    cases: int = 0
    by_category: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    status_500: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    gauges: dict[str, float] = field(default_factory=dict)
    engine_running: float | None = None
    seconds: float = 0.0


# -- the wire ------------------------------------------------------------------------------
async def read_answer(reader: asyncio.StreamReader) -> int | None:
    """The status of the answer, reading it to its end (Content-Length, chunked or EOF)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await reader.read(65536)
        if not chunk:
            return _status(head)
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    status = _status(head)
    while status == 100:  # Expect: 100-continue; the answer follows
        while b"\r\n\r\n" not in rest and (chunk := await reader.read(65536)):
            rest += chunk
        head, _, rest = rest.partition(b"\r\n\r\n")
        status = _status(head)
    lower = head.lower()
    if b"content-length:" in lower:
        size = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < size and (chunk := await reader.read(65536)):
            rest += chunk
    elif b"chunked" in lower:
        while not rest.endswith(b"0\r\n\r\n") and (chunk := await reader.read(65536)):
            rest += chunk
    return status


def _status(head: bytes) -> int | None:
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def request(
    t: Target,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    content_type: str | None = "application/json",
    host: str | None = None,
    extra: list[str] | None = None,
    auth: bool = True,
    length: int | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host if host is not None else t.hostport}"]
    if auth and t.key:
        lines.append(f"Authorization: Bearer {t.key}")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines += [*(extra or []), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def send(raw: bytes) -> Run:
    """Send `raw`, read the answer."""

    async def run(t: Target) -> Outcome:
        reader, writer = await asyncio.open_connection(t.host, t.port)
        try:
            writer.write(raw)
            await writer.drain()
            return Outcome(await read_answer(reader))
        finally:
            writer.close()

    return run


def steps(*parts: bytes | float, then: str = "read") -> Run:
    """Send bytes and sleep between them (floats), then read the answer ("read"), or leave
    ("close"), or read the first bytes of the answer and leave ("peek")."""

    async def run(t: Target) -> Outcome:
        reader, writer = await asyncio.open_connection(t.host, t.port)
        try:
            for p in parts:
                if isinstance(p, float):
                    await asyncio.sleep(p)
                else:
                    writer.write(p)
                    await writer.drain()
            if then == "read":
                return Outcome(await read_answer(reader))
            if then == "peek":
                first = await reader.read(200)
                return Outcome(_status(first.split(b"\r\n\r\n")[0]), note="left after peek")
            return Outcome(None, note="left")
        except (ConnectionError, OSError) as exc:
            return Outcome(None, note=type(exc).__name__)
        finally:
            writer.transport.abort()

    return run


def body(t: Target, **fields: Any) -> bytes:
    msg = {"model": t.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    msg.update(fields)
    return json.dumps(msg).encode()


# -- the corpus ----------------------------------------------------------------------------
def malformed_json(t: Target) -> list[Case]:
    bodies = [
        b"",
        b"{",
        b"}",
        b"{{}",
        b'{"model":',
        b'{"model": "x",}',
        b"[",
        b"null",
        b"true",
        b"0",
        b"-1",
        b'"string"',
        b"[]",
        b"[{}]",
        b"{}",
        b"\xff\xfe\x00",
        b"\xef\xbb\xbf{}",
        b"NaN",
        b'{"model": NaN}',
        b'{"model": Infinity}',
        b"{'model': 'x'}",
        b'{"model": "\\ud800"}',
        b'{"model": "\x00"}',
        b'{"a":1}{"b":2}',
        b'{"model" "x"}',
        b'{"model": "x", "model": "y"}',
        b"1e999999",
        b'{"max_tokens": 1e999999}',
        b"\x00" * 100,
        b"<xml/>",
        b"a=1&b=2",
        b'{"messages": [' + b"1," * 10000 + b"1]}",
        b'{"model": "' + b"\\" * 1001 + b'"}',
        b'{"model": "\xc3\x28"}',
    ]
    return [
        Case("malformed_json", f"{path} body {i}", send(request(t, "POST", path, b)))
        for path in (CHAT, COMPLETIONS)
        for i, b in enumerate(bodies)
    ]


def nested_json(t: Target) -> list[Case]:
    cases = []
    for depth in (10, 100, 1000, 10_000, 100_000):
        arrays = b"[" * depth + b"]" * depth
        objects = b'{"a":' * depth + b"1" + b"}" * depth
        for path in (CHAT, COMPLETIONS):
            for name, nested in (("arrays", arrays), ("objects", objects)):
                whole = (
                    b'{"model": "%s", "prompt": "x", "messages": [{"role": "user", "content": %s}]}'
                )
                b = whole % (t.model.encode(), nested)
                cases.append(
                    Case("nested_json", f"{path} {name} {depth}", send(request(t, "POST", path, b)))
                )
    return cases


def wrong_types(t: Target) -> list[Case]:
    chat = [
        {"model": 1},
        {"model": None},
        {"model": []},
        {"model": {}},
        {"model": ""},
        {"model": "x" * 100_000},
        {"model": "no-such-model"},
        {"messages": "hi"},
        {"messages": 1},
        {"messages": [1]},
        {"messages": []},
        {"messages": [{"role": 1}]},
        {"messages": [{"role": "user", "content": {}}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": None},
        {"max_tokens": -1},
        {"max_tokens": 0},
        {"max_tokens": "10"},
        {"max_tokens": 10**30},
        {"max_tokens": 2**64},
        {"max_tokens": True},
        {"max_tokens": 1.5},
        {"temperature": "hot"},
        {"temperature": -5},
        {"temperature": 1e308},
        {"top_p": 7},
        {"stream": "yes"},
        {"stream": 1},
        {"stream": None},
        {"n": 1000},
        {"n": -1},
        {"stop": 1},
        {"stop": [1]},
        {"stop": ["x"] * 1000},
        {"logprobs": "x"},
        {"top_logprobs": 10**9},
        {"seed": "x"},
        {"seed": 2**80},
        {"user": {}},
        {"stream_options": 1},
        {"response_format": "json"},
        {"tools": "x"},
        {"max_completion_tokens": -5},
        {"unknown_field": [1, 2, 3]},
    ]
    completion = [
        {"prompt": 1},
        {"prompt": None},
        {"prompt": {}},
        {"prompt": []},
        {"prompt": [1, 2]},
        {"prompt": [[1]]},
        {"prompt": [10**12]},
        {"prompt": [-1]},
        {"prompt": ["a", 1]},
        {"prompt": "x", "max_tokens": -3},
        {"prompt": "x", "echo": "y"},
        {"prompt": "x" * 200_000},
        {"prompt": "x", "best_of": 10**6},
        {"prompt": "x", "suffix": 1},
    ]
    cases = [
        Case(
            "wrong_types",
            f"chat {json.dumps(f)[:50]}",
            send(request(t, "POST", CHAT, body(t, **f))),
        )
        for f in chat
    ]
    for f in completion:
        b = json.dumps({"model": t.model, "max_tokens": 4, **f}).encode()
        cases.append(
            Case(
                "wrong_types",
                f"completion {json.dumps(f)[:50]}",
                send(request(t, "POST", COMPLETIONS, b)),
            )
        )
    return cases


def valid(t: Target) -> list[Case]:
    """A few good requests between the bad ones: the engine really generates."""
    cases = []
    for i in range(6):
        stream = i % 2 == 0
        b = body(t, stream=stream, max_tokens=8)
        cases.append(Case("valid", f"chat stream={stream} {i}", send(request(t, "POST", CHAT, b))))
    b = json.dumps({"model": t.model, "prompt": "Hello", "max_tokens": 8}).encode()
    cases.append(Case("valid", "completion", send(request(t, "POST", COMPLETIONS, b))))
    return cases


def content_types(t: Target) -> list[Case]:
    types = [
        None,
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json, text/plain",
        "json",
        "application/xml",
        "application/json; charset=latin-1",
        "APPLICATION/JSON",
        "text/json",
        "*/*",
    ]
    return [
        Case(
            "content_type",
            f"{path} {ct!r}",
            send(request(t, "POST", path, body(t), content_type=ct)),
        )
        for path in (CHAT, COMPLETIONS, "/admin/keys")
        for ct in types
    ]


def methods_and_paths(t: Target) -> list[Case]:
    cases = [
        Case("methods_paths", f"{m} {p}", send(request(t, m, p, content_type=None)))
        for m in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO")
        for p in (CHAT, "/admin/keys")
    ]
    paths = [
        CHAT + "/",
        "/" + CHAT,
        "/v1/../v1/chat/completions",
        "/v1/chat%2Fcompletions",
        "/%2e%2e/%2e%2e/etc/passwd",
        CHAT + "?x=1&x=2",
        "/v1/models/../../admin/keys",
        "/" + "a" * 60_000,
        "/v1/chat/completions%00",
        "/v1/ch\u00e4t".encode().decode("latin-1"),
        "http://evil.example/v1/chat/completions",
        "*",
        "/admin/keys/../../metrics",
        "/admin/keys/%2e%2e",
        "/metrics/fleet",
        "/sd/targets",
        "/openapi.json",
        "/ready",
        "/v1/models",
        "/v1/models/" + t.model,
        "/admin/keys/nope",
        "//",
        "/%",
        "/%zz",
        "/v1//chat//completions",
        "/V1/CHAT/COMPLETIONS",
    ]
    for p in paths:
        cases.append(Case("methods_paths", f"POST {p[:40]}", send(request(t, "POST", p, body(t)))))
        cases.append(
            Case("methods_paths", f"GET {p[:40]}", send(request(t, "GET", p, content_type=None)))
        )
    cases.append(
        Case(
            "methods_paths",
            "DELETE admin key nope",
            send(request(t, "DELETE", "/admin/keys/x", content_type=None)),
        )
    )
    return cases


def heads(t: Target) -> list[Case]:
    hp = t.hostport
    good = body(t)
    raw: dict[str, bytes] = {
        "100k header": request(t, "POST", CHAT, good, extra=["X-Big: " + "a" * 100_000]),
        "2000 headers": request(t, "POST", CHAT, good, extra=[f"X-{i}: v" for i in range(2000)]),
        "2 MiB header": request(
            t, "GET", "/health", content_type=None, extra=["X: " + "b" * (2 << 20)]
        ),
        "two lengths": request(t, "POST", CHAT, good, extra=["Content-Length: 5"]),
        "negative length": request(t, "POST", CHAT, good, length=-1),
        "text length": request(t, "POST", CHAT, good, extra=[], length=None).replace(
            b"Content-Length: %d" % len(good), b"Content-Length: abc"
        ),
        "huge length": request(t, "POST", CHAT, good, length=10**30),
        "length past body": request(t, "POST", CHAT, good, length=len(good) + 5),
        "length before body": request(t, "POST", CHAT, good, length=len(good) - 5),
        "chunked and length": request(
            t, "POST", CHAT, b"", extra=["Transfer-Encoding: chunked"], length=5
        )
        + b"5\r\nhello\r\n0\r\n\r\n",
        "bad chunk": request(
            t, "POST", CHAT, b"", extra=["Transfer-Encoding: chunked"], length=None
        ).replace(b"Content-Length: 0\r\n", b"")
        + b"zz\r\nhello\r\n0\r\n\r\n",
        "bad header name": request(t, "GET", "/health", content_type=None, extra=["Bad Name: x"]),
        "folded header": request(
            t, "GET", "/health", content_type=None, extra=["X-A: a", " folded"]
        ),
        "nul in value": request(t, "GET", "/health", content_type=None, extra=["X-A: a\x00b"]),
        "auth 100k": request(
            t,
            "GET",
            "/v1/models",
            content_type=None,
            auth=False,
            extra=["Authorization: Bearer " + "k" * 100_000],
        ),
        "auth basic": request(
            t,
            "GET",
            "/v1/models",
            content_type=None,
            auth=False,
            extra=["Authorization: Basic eDp5"],
        ),
        "auth 8bit": request(
            t, "POST", CHAT, good, auth=False, extra=["Authorization: Bearer \xe9\xff"]
        ),
        "auth empty bearer": request(
            t, "POST", CHAT, good, auth=False, extra=["Authorization: Bearer "]
        ),
        "auth wrong key": request(
            t, "POST", CHAT, good, auth=False, extra=["Authorization: Bearer sk-wrong"]
        ),
        "no auth": request(t, "POST", CHAT, good, auth=False),
        "admin with user key": request(t, "POST", "/admin/keys", b'{"name": "x", "admin": true}'),
        "expect 100": request(t, "POST", CHAT, good, extra=["Expect: 100-continue"]),
        "http/1.0": request(t, "GET", "/health", content_type=None).replace(
            b"HTTP/1.1", b"HTTP/1.0", 1
        ),
        "http/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "garbage line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,
        "lowercase method": request(t, "get", "/health", content_type=None),
        "bare LF": f"GET /health HTTP/1.1\nHost: {hp}\nConnection: close\n\n".encode(),
        "no host": b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
        "space before colon": request(t, "GET", "/health", content_type=None, extra=["X-A : b"]),
        "upgrade websocket": request(
            t,
            "GET",
            "/health",
            content_type=None,
            extra=["Upgrade: websocket", "Connection: upgrade"],
        ),
        "upgrade h2c": request(
            t, "GET", "/health", content_type=None, extra=["Upgrade: h2c", "HTTP2-Settings: AA"]
        ),
    }
    return [Case("headers", name, send(r)) for name, r in raw.items()]


def big_bodies(t: Target) -> list[Case]:
    return [dataclasses.replace(c, alone=True) for c in _big_bodies(t)]


def _big_bodies(t: Target) -> list[Case]:
    big = b"x" * (64 << 20)
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"y" * (1 << 20))
    chunked_head = request(t, "POST", CHAT, b"", extra=["Transfer-Encoding: chunked"]).replace(
        b"Content-Length: 0\r\n", b""
    )
    return [
        Case("bodies", "64 MiB at once", send(request(t, "POST", CHAT, big))),
        Case("bodies", "64 MiB completions", send(request(t, "POST", COMPLETIONS, big))),
        Case("bodies", "20 MiB chunked", send(chunked_head + chunk * 20 + b"0\r\n\r\n")),
        Case(
            "bodies",
            "9 MiB json string",
            send(request(t, "POST", CHAT, body(t, user="u" * (9 << 20)))),
        ),
        Case(
            "bodies",
            "7 MiB json string",
            send(request(t, "POST", CHAT, body(t, user="u" * (7 << 20)))),
        ),
        Case("bodies", "64 MiB admin", send(request(t, "POST", "/admin/keys", big))),
        Case(
            "bodies",
            "declared 1 GiB, sends 1 KiB and leaves",
            steps(request(t, "POST", CHAT, b"", length=1 << 30) + b"{" * 1024, 0.2, then="close"),
        ),
    ]


def forged_hosts(t: Target) -> list[Case]:
    hosts = [
        "evil.example",
        f"evil.example:{t.port}",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "",
        "a@localhost",
        "localhost@evil.example",
        "x" * 10_000,
        "::1",
        "[::1",
        "évil.example",
        f"evil.example:{t.port}, localhost",
        "gateway",
        "0x7f.1",
        "localhost:abc",
    ]
    cases = []
    for h in hosts:
        cases.append(
            Case(
                "forged_host",
                f"GET {h[:30]!r}",
                send(request(t, "GET", "/v1/models", content_type=None, host=h)),
            )
        )
        cases.append(
            Case("forged_host", f"POST {h[:30]!r}", send(request(t, "POST", CHAT, body(t), host=h)))
        )
    two = request(t, "GET", "/v1/models", content_type=None, extra=["Host: evil.example"])
    cases.append(Case("forged_host", "two Host headers", send(two)))
    return cases


def slow_senders(t: Target) -> list[Case]:
    head = request(t, "POST", CHAT, body(t))
    split = head.index(b"\r\n\r\n") + 4
    trickle_head: list[bytes | float] = []
    for i in range(0, 40):
        trickle_head += [head[i : i + 1], 0.25]
    trickle_body: list[bytes | float] = [head[:split]]
    for i in range(split, min(len(head), split + 40)):
        trickle_body += [head[i : i + 1], 0.25]
    return [
        Case("slow", "silent connection", steps(then="read")),
        Case("slow", "trickled head", steps(*trickle_head, then="read")),
        Case("slow", "trickled body", steps(*trickle_body, then="read")),
        Case("slow", "head then silence", steps(head[:split], then="read")),
        Case("slow", "half a body then silence", steps(head[: split + 10], then="read")),
        Case("slow", "partial request line", steps(b"POST /v1/chat", then="read")),
        Case(
            "slow",
            "chunked never ends",
            steps(
                request(t, "POST", CHAT, b"", extra=["Transfer-Encoding: chunked"]).replace(
                    b"Content-Length: 0\r\n", b""
                )
                + b"5\r\nhello\r\n",
                then="read",
            ),
        ),
        Case(
            "slow",
            "admin body never comes",
            steps(request(t, "POST", "/admin/keys", b"", length=100), then="read"),
        ),
    ]


def disconnects(t: Target) -> list[Case]:
    cases = []
    for path in (CHAT, COMPLETIONS):
        for stream in (False, True):
            if path == CHAT:
                b = body(t, stream=stream, max_tokens=16)
            else:
                b = json.dumps(
                    {"model": t.model, "prompt": "Count:", "max_tokens": 16, "stream": stream}
                ).encode()
            r = request(t, "POST", path, b)
            split = r.index(b"\r\n\r\n") + 4
            tag = f"{path} stream={stream}"
            cases += [
                Case("disconnect", f"{tag} mid request line", steps(r[:10], 0.05, then="close")),
                Case("disconnect", f"{tag} mid head", steps(r[: split - 20], 0.05, then="close")),
                Case("disconnect", f"{tag} after head", steps(r[:split], 0.05, then="close")),
                Case("disconnect", f"{tag} mid body", steps(r[: split + 5], 0.05, then="close")),
                Case("disconnect", f"{tag} after body", steps(r, then="close")),
                Case("disconnect", f"{tag} after body 50 ms", steps(r, 0.05, then="close")),
                Case("disconnect", f"{tag} after body 300 ms", steps(r, 0.3, then="close")),
                Case("disconnect", f"{tag} after first bytes", steps(r, then="peek")),
            ]
    return cases


CATEGORIES = (
    malformed_json,
    nested_json,
    wrong_types,
    valid,
    content_types,
    methods_and_paths,
    heads,
    big_bodies,
    forged_hosts,
    slow_senders,
    disconnects,
)


GENERATING = frozenset({"nested_json", "wrong_types", "valid", "disconnect"})


def corpus(t: Target) -> list[Case]:
    """Every case; those of the categories whose requests may run on the engine get its
    generation time on top of the gateway's deadlines."""
    cases = [c for make in CATEGORIES for c in make(t)]
    return [dataclasses.replace(c, generates=c.category in GENERATING) for c in cases]


# -- running it ----------------------------------------------------------------------------
async def run_case(case: Case, t: Target, gate: asyncio.Semaphore) -> Outcome:
    budget = t.deadline_s + (BIG_TRANSFER_S if case.alone else 0.0)
    budget += GENERATION_S if case.generates else 0.0
    async with gate:
        started = time.monotonic()
        try:
            out = await asyncio.wait_for(case.run(t), budget)
        except TimeoutError:
            out = Outcome(None, note="hang", hang=True)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            out = Outcome(None, note=type(exc).__name__)
        out.seconds = time.monotonic() - started
        return out


def scrape(url: str, key: str | None = None) -> dict[str, float]:
    req = urllib.request.Request(url.rstrip("/") + "/metrics")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    values: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            values[name] += float(value)
        except ValueError:
            continue
    return values


def gateway_gauges(url: str, metrics_token: str | None) -> dict[str, float]:
    return {
        n: v
        for n, v in scrape(url, metrics_token).items()
        if n.startswith("deepfleet_")
        and any(w in n for w in GAUGE_WORDS)
        and not n.endswith(("_total", "_created", "_bucket", "_count", "_sum"))
    }


async def settle(args: argparse.Namespace, report: Report, within_s: float = 60.0) -> None:
    """Wait for the gauges to come back to 0 (engines abort requests within a moment)."""
    end = time.monotonic() + within_s
    while True:
        report.gauges = await asyncio.to_thread(gateway_gauges, args.gateway, args.metrics_token)
        if args.engine:
            engine = await asyncio.to_thread(scrape, args.engine)
            report.engine_running = engine.get("vllm:num_requests_running", 0.0)
        busy = any(report.gauges.values()) or bool(report.engine_running)
        if not busy or time.monotonic() > end:
            return
        await asyncio.sleep(0.5)


async def run_corpus(args: argparse.Namespace) -> Report:
    u = urlsplit(args.gateway)
    t = Target(u.hostname or "127.0.0.1", u.port or 80, args.key, args.model, args.deadline)
    cases = corpus(t)
    gate = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()
    small = [c for c in cases if not c.alone]
    outcomes = dict(
        zip(
            map(id, small),
            await asyncio.gather(*(run_case(c, t, gate) for c in small)),
            strict=True,
        )
    )
    one = asyncio.Semaphore(1)
    for c in cases:
        if c.alone:
            outcomes[id(c)] = await run_case(c, t, one)
    report = Report(cases=len(cases), seconds=time.monotonic() - started)
    for case in cases:
        out = outcomes[id(case)]
        label = str(out.status) if out.status is not None else (out.note or "closed")
        report.by_category[case.category][label] += 1
        if out.status == 500:
            report.status_500.append(f"{case.category}: {case.name}")
        if out.hang:
            report.hangs.append(f"{case.category}: {case.name}")
    await settle(args, report)
    return report


def as_json(report: Report) -> dict[str, Any]:
    return {
        "cases": report.cases,
        "seconds": round(report.seconds, 1),
        "categories": {
            cat: {"cases": sum(c.values()), "outcomes": dict(sorted(c.items()))}
            for cat, c in report.by_category.items()
        },
        "status_500": report.status_500,
        "hangs": report.hangs,
        "gateway_gauges": report.gauges,
        "engine_num_requests_running": report.engine_running,
    }


def failed(report: Report) -> bool:
    return bool(
        report.status_500 or report.hangs or any(report.gauges.values()) or report.engine_running
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gateway", required=True, help="the gateway's URL")
    p.add_argument("--engine", help="an engine's URL (for vllm:num_requests_running)")
    p.add_argument("--key", help="an API key for the requests that should pass auth")
    p.add_argument("--metrics-token", help="the gateway's /metrics token, if set")
    p.add_argument("--model", default="SmolLM2-135M-Instruct")
    p.add_argument(
        "--deadline",
        type=float,
        default=75.0,
        help="seconds a case may take before it is a hang (the gateway's head or "
        "body deadline plus slack)",
    )
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    report = asyncio.run(run_corpus(args))
    out = as_json(report)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for cat, c in out["categories"].items():
            print(f"{cat:16} {c['cases']:4}  {c['outcomes']}")
        print(
            f"{report.cases} cases in {report.seconds:.0f} s; 500s: {len(report.status_500)}; "
            f"hangs: {len(report.hangs)}; gauges: {report.gauges}; "
            f"engine running: {report.engine_running}"
        )
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
