"""Every vLLM command in every rendered file is accepted by the installed vLLM's own argument
parser (vllm-ascend uses vLLM's parser too; `--quantization ascend` is a plain string there)."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CASES, render_case

SERVER = "vllm.entrypoints.openai.api_server"


def _after_server(tokens: list[str]) -> list[str] | None:
    if SERVER not in tokens:
        return None
    rest = tokens[tokens.index(SERVER) + 1 :]
    for stop in (">>", "2>&1"):
        if stop in rest:
            rest = rest[: rest.index(stop)]
    return rest


def vllm_commands(files: dict[str, str]) -> list[list[str]]:
    """The arguments after the server module in compose entrypoints and shell scripts
    (including the `bash -c` strings they run)."""
    found: list[list[str]] = []
    for path, text in files.items():
        if path == "compose.yaml":
            for service in yaml.safe_load(text)["services"].values():
                args = _after_server(service.get("entrypoint", []))
                if args is not None:
                    found.append(args)
        elif path.endswith(".sh"):
            for line in text.replace("\\\n", " ").splitlines():
                if SERVER not in line:
                    continue
                tokens = shlex.split(line, comments=True)
                inner = [t for t in tokens if SERVER in t and t != SERVER]
                for t in inner:  # a `bash -c '...'` payload
                    tokens = shlex.split(t)
                args = _after_server(tokens)
                if args is not None:
                    found.append(args)
    return found


EXPECTED = {  # case: (commands, tp, pp)
    "r1-8x8-compose": (1, 8, 4),
    "h200-1x8-compose": (3, None, 1),
    "ascend-2x8-vllm-ascend": (1, 8, 2),
    "r1-8x8-910b-long-docs-ascend": (1, 8, 8),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vllm_parser_accepts_rendered_commands(vllm_parser: Any, name: str) -> None:
    commands = vllm_commands(render_case(CASES[name]).files)
    count, tp, pp = EXPECTED[name]
    assert len(commands) == count
    for argv in commands:
        args = vllm_parser.parse_args(argv)
        assert args.model.startswith(("/models/", "deepseek-ai/"))
        assert args.pipeline_parallel_size == pp
        if tp is not None:
            assert args.tensor_parallel_size == tp
        assert args.port >= 8100


def test_the_k8s_and_mindie_bundles_hold_no_vllm_command() -> None:
    # On Kubernetes the controller builds the commands at run time with the same adapter.
    assert vllm_commands(render_case(CASES["r1-8x8-k8s"]).files) == []
    assert vllm_commands(render_case(CASES["ascend-2x8-mindie"]).files) == []
