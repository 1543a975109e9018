"""`deepfleet chat`: stream an answer from the fleet to the terminal."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import typer

from deepfleet.cli.common import STATE_OPT, console, current_state, fail, out, resolve_state_dir
from deepfleet.ui.credentials import LOCAL_KEY_FILE, read_secret, secrets_dir


async def _stream(
    url: str,
    model: str | None,
    prompt: str,
    api_key: str | None,
    max_tokens: int,
    temperature: float,
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        if model is None:
            async with session.get(f"{url}/v1/models") as resp:
                models = (await resp.json())["data"]
            if not models:
                fail("the fleet serves no model")
            model = models[0]["id"]
        body = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
            if resp.status != 200:
                err = await resp.json(content_type=None)
                fail(f"HTTP {resp.status}: {err.get('error', {}).get('message', err)}")
            thinking = False
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    fail(event["error"].get("message", "stream failed"))
                delta = event["choices"][0].get("delta", {}) if event.get("choices") else {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning:
                    thinking = True
                    out.print(reasoning, end="", style="dim italic", soft_wrap=True)
                if delta.get("content"):
                    if thinking:
                        out.print("\n")
                        thinking = False
                    out.print(delta["content"], end="", soft_wrap=True, markup=False)
            out.print()


def chat(
    prompt: str | None = typer.Argument(None, help="The question; read from stdin if absent."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model name (default: the first the gateway lists)."
    ),
    url: str | None = typer.Option(
        None, "--url", help="Gateway URL (default: the running fleet's)."
    ),
    api_key: str | None = typer.Option(None, "--api-key", envvar="DEEPFLEET_API_KEY"),
    max_tokens: int = typer.Option(512, "--max-tokens"),
    temperature: float = typer.Option(0.0, "--temperature"),
    state_dir: Path | None = STATE_OPT,
) -> None:
    """Ask the fleet a question and stream the answer."""
    sdir = resolve_state_dir(None, state_dir)
    if url is None:
        state = current_state(sdir)
        if state is None:
            fail("no running fleet found; start one with `deepfleet up` or pass --url")
        url = state.gateway_url
    if api_key is None:
        # The key `up --ui` saves for local clients once the gateway requires keys.
        api_key = read_secret(secrets_dir(sdir) / LOCAL_KEY_FILE)
    text = prompt if prompt is not None else sys.stdin.read()
    if not text.strip():
        fail("empty prompt")
    try:
        asyncio.run(_stream(url.rstrip("/"), model, text, api_key, max_tokens, temperature))
    except aiohttp.ClientError as exc:
        console.print(f"[red]cannot reach the gateway at {url}: {exc}[/]")
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    app.command()(chat)
