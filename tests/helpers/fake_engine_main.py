"""Run a FakeEngine as its own process: python -m tests.helpers.fake_engine_main PORT NAME."""

from __future__ import annotations

import asyncio
import sys

from tests.helpers.fake_engine import FakeEngine


async def main(port: int, name: str) -> None:
    engine = FakeEngine(name)
    await engine.start(port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
