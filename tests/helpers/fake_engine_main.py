"""Run a FakeEngine as its own process:
python -m tests.helpers.fake_engine_main PORT NAME [TOKENS [DELAY_S]]."""

from __future__ import annotations

import asyncio
import sys

from tests.helpers.fake_engine import FakeEngine


async def main(port: int, name: str, tokens: int, delay_s: float) -> None:
    engine = FakeEngine(name)
    engine.ctl.tokens, engine.ctl.delay_s = tokens, delay_s
    await engine.start(port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            int(args[0]),
            args[1],
            int(args[2]) if len(args) > 2 else 5,
            float(args[3]) if len(args) > 3 else 0.0,
        )
    )
