"""A real gateway (server.py's settings, app factory and uvicorn config) on a loopback port, for
the tests of the HTTP edge: slow senders, browsers, oversize bodies.

The gateway config is given as GatewaySpec fields; fields an older GatewaySpec lacks are left
out, so the tests also run against older code and show what it let through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn

from deepfleet.config.schema import GatewaySpec
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, write_state
from deepfleet.gateway import server


@contextlib.asynccontextmanager
async def running_gateway(tmp_path: Path, **fields: Any) -> AsyncIterator[tuple[str, int]]:
    """Yields (url, port) of a gateway with no models and no keys."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = tmp_path / "fleet.json"
    write_state(state, FleetState(controller_pid=1, gateway_url=url))
    known = GatewaySpec.model_fields
    spec = GatewaySpec.model_validate({k: v for k, v in fields.items() if k in known})
    settings = server.worker_settings(spec, state)
    if hasattr(server, "with_bind_host"):
        settings = server.with_bind_host(settings, "127.0.0.1")
    config = server.uvicorn_config(settings, "127.0.0.1", port, 1, "warning", spec)
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
        await asyncio.sleep(0.01)
    try:
        yield url, port
    finally:
        srv.should_exit = True
        await task


async def read_all(reader: asyncio.StreamReader, within_s: float) -> bytes:
    """Everything the server sends until it closes; TimeoutError if it keeps the connection
    open past `within_s`."""
    out = b""
    async with asyncio.timeout(within_s):
        while chunk := await reader.read(65536):
            out += chunk
    return out
