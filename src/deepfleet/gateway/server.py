"""Run the gateway: uvicorn (uvloop + httptools), N worker processes on one port."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from deepfleet.gateway.app import Gateway
from deepfleet.gateway.endpoints import EndpointTable

STATE_ENV = "DEEPFLEET_GATEWAY_STATE_FILE"


def create_app() -> Starlette:
    """uvicorn factory: each worker process builds its own gateway from the state file."""
    return Gateway(EndpointTable(Path(os.environ[STATE_ENV]))).app()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m deepfleet.gateway",
        description="deepfleet gateway (started by the controller)",
    )
    p.add_argument("--state-file", required=True, type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    os.environ[STATE_ENV] = str(args.state_file.resolve())
    uvicorn.run(
        "deepfleet.gateway.server:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
