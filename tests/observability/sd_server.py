"""A stand-in for the gateway's observability routes, for the Prometheus test while the
gateway does not mount them: `python -m uvicorn tests.observability.sd_server:create_app
--factory` with DEEPFLEET_SD_STATE_FILE naming the fleet's fleet.json."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette

from deepfleet.observability.sd import observability_routes, state_file_reader

STATE_ENV = "DEEPFLEET_SD_STATE_FILE"


def create_app() -> Starlette:
    return Starlette(routes=observability_routes(state_file_reader(Path(os.environ[STATE_ENV]))))
