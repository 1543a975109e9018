"""`deepfleet sim`: start simulated engines (a test and planning tool, not a model server)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import typer

from deepfleet.cli.common import console, fail, out
from deepfleet.sim.build import SimSpec, build, tokenizer_folder
from deepfleet.sim.engine import ScaledClock
from deepfleet.sim.server import serve_engines
from deepfleet.sim.tokenizer import load_tokenizer


def sim(
    model: str = typer.Option(
        ...,
        "--model",
        help="Catalog name (e.g. deepseek-ai/DeepSeek-R1) or a folder with config.json.",
    ),
    gpu: str = typer.Option(
        ..., "--gpu", help="Device profile: H200, H100, A100-80GB, Ascend-910B, CPU, ..."
    ),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel size of the simulated replica."),
    pp: int = typer.Option(1, "--pp", help="Pipeline-parallel size of the simulated replica."),
    port: int = typer.Option(8100, "--port", help="Port of the first engine (127.0.0.1)."),
    engines: int = typer.Option(
        1, "--engines", help="Simulated engines in this process, on port, port+1, ..."
    ),
    speed: float = typer.Option(
        1.0, "--speed", help="Time scale: 10 runs ten times faster than the simulated hardware."
    ),
    kv_tokens: int | None = typer.Option(
        None, "--kv-tokens", help="KV cache size in tokens (default: the planner's)."
    ),
    kv_events: str | None = typer.Option(
        None,
        "--kv-events",
        help="ZMQ endpoint for KV events, as vLLM's: tcp://*:5557 binds, tcp://HOST:5557 connects.",
    ),
    served_model_name: str | None = typer.Option(None, "--served-model-name"),
    tokenizer: str | None = typer.Option(
        None,
        "--tokenizer",
        help="Folder with tokenizer.json (default: the model folder's, else a fast one).",
    ),
    max_model_len: int | None = typer.Option(None, "--max-model-len"),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs"),
    max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens"),
    block_size: int | None = typer.Option(None, "--block-size"),
    efficiency: float | None = typer.Option(
        None,
        "--efficiency",
        help="Share of the roofline reached (default: the profile's, 0.614 on GPUs).",
    ),
    reasoning_parser: bool | None = typer.Option(
        None,
        "--reasoning-parser/--no-reasoning-parser",
        help="Split R1 reasoning into delta.reasoning (default: on for R1 models).",
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="Stop after this many seconds (default: until Ctrl-C)."
    ),
) -> None:
    """Start SIMULATED vLLM engines: the OpenAI API, vLLM metrics and KV events with timing from
    the planner's model and hardware facts. A test and planning tool; it runs no model."""
    spec = SimSpec(
        model=model, gpu=gpu, tp=tp, pp=pp, served_model_name=served_model_name,
        tokenizer=tokenizer, kv_tokens=kv_tokens, max_model_len=max_model_len,
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
        block_size=block_size, efficiency=efficiency, reasoning_parser=reasoning_parser,
    )  # fmt: skip
    if speed <= 0 or engines < 1:
        fail("--speed must be positive and --engines at least 1")
    try:
        config, profile, _facts = build(spec)
    except ValueError as exc:
        fail(str(exc))
    started = time.monotonic()
    tok = load_tokenizer(tokenizer_folder(spec))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        async with serve_engines(
            config, profile, tok, count=engines, port=port, kv_events=kv_events,
            clock=ScaledClock(speed),
        ) as running:  # fmt: skip
            console.print(
                f"[bold]deepfleet SIMULATOR[/] (test tool, no model runs): {len(running)} "
                f"engine(s) of {profile.name}, model {config.model!r}, speed x{speed:g}, "
                f"KV {config.kv_tokens:,} tokens, block {config.block_size}, max_num_seqs "
                f"{config.max_num_seqs}, ready in {time.monotonic() - started:.1f} s"
            )
            for item in running:
                out.print(
                    item.url + (f"  kv-events {item.kv_endpoint}" if item.kv_endpoint else "")
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=duration)

    asyncio.run(main())


def register(app: typer.Typer) -> None:
    app.command("sim", help="Start SIMULATED vLLM engines (test and planning tool).")(sim)
