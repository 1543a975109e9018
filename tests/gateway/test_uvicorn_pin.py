"""The gateway builds on uvicorn internals: gateway/httpserver.py subclasses the private
httptools protocol, and gateway/server.py runs uvicorn's worker supervisor itself. pyproject
pins uvicorn to the range they were tested with; these tests fail on an upgrade that breaks
them, before production does."""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import uvicorn
from packaging.requirements import Requirement
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from deepfleet.gateway.httpserver import HOOKS, GatewayHttpProtocol
from deepfleet.gateway.server import HTTP_PROTOCOL

PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"


def test_installed_uvicorn_satisfies_the_pin() -> None:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [r for r in map(Requirement, deps) if r.name == "uvicorn"]
    assert any(s.operator in ("<", "==", "~=") for s in pin.specifier), "needs an upper bound"
    assert pin.specifier.contains(version("uvicorn")), (version("uvicorn"), str(pin.specifier))


def test_the_names_the_gateway_uses_exist() -> None:
    params = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    assert params[:5] == ["self", "config", "server_state", "app_state", "_loop"]
    for name in ("connection_made", "on_message_begin", "connection_lost"):
        assert name in vars(HttpToolsProtocol), name
    # server.serve: what uvicorn.run does with several workers.
    assert list(inspect.signature(Multiprocess.__init__).parameters) == [
        "self",
        "config",
        "sockets",
    ]
    assert callable(uvicorn.Config.bind_socket)
    from uvicorn.config import STARTUP_FAILURE

    assert isinstance(STARTUP_FAILURE, int)


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_the_protocol_subclass_works_on_the_installed_uvicorn() -> None:
    """The attributes the subclass relies on: `loop` set by `__init__`, the transport given to
    `connection_made` being the one uvicorn writes to, `scope` rebuilt by `on_message_begin`
    and handed to the app as is, `connection_lost` called on the protocol."""
    scopes: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        scope["extensions"][HOOKS].hold_head()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, http=HTTP_PROTOCOL, log_level="warning")
    config.load()
    assert config.http_protocol_class is GatewayHttpProtocol
    proto = GatewayHttpProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    assert proto.transport is proto.holding
    proto.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    for _ in range(100):
        if transport.writes:
            break
        await asyncio.sleep(0.01)
    assert scopes and scopes[0]["extensions"][HOOKS] is proto.hooks
    (answer,) = transport.writes  # the held head left with the body
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nok")
    proto.connection_lost(None)
    assert proto.hooks.lost
