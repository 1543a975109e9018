"""The load scraper reads each replica's /metrics under its own engine's metric names."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from deepfleet.engines.sglang import SGLANG_METRICS
from deepfleet.routing.feeds import load_metrics
from deepfleet.routing.scraper import LoadScraper

VLLM_TEXT = (
    "vllm:num_requests_running 3\nvllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.5\n"
)
SGLANG_TEXT = (
    'sglang:num_running_reqs{tp_rank="0"} 7\n'
    'sglang:num_queue_reqs{tp_rank="0"} 2\n'
    'sglang:token_usage{tp_rank="0"} 0.25\n'
)


async def test_each_replica_is_read_under_its_engines_names() -> None:
    async def vllm(_: web.Request) -> web.Response:
        return web.Response(text=VLLM_TEXT)

    async def sglang(_: web.Request) -> web.Response:
        return web.Response(text=SGLANG_TEXT)

    app = web.Application()
    app.router.add_get("/v/metrics", vllm)
    app.router.add_get("/s/metrics", sglang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        scraper = LoadScraper(lambda: session)
        scraper.set_targets(
            {"v": f"{base}/v", "s": f"{base}/s", "s-as-vllm": f"{base}/s"},
            {"s": SGLANG_METRICS},
        )
        await scraper.scrape_all()
    await runner.cleanup()
    v, s = scraper.loads["v"], scraper.loads["s"]
    assert (v.running, v.waiting, v.kv_usage) == (3, 1, 0.5)
    assert (s.running, s.waiting, s.kv_usage) == (7, 2, 0.25)
    assert "s-as-vllm" not in scraper.loads  # vLLM's names find nothing in SGLang's text


def test_metric_names_come_from_the_replicas_engine() -> None:
    assert load_metrics("sglang") == SGLANG_METRICS
    assert load_metrics("vllm-cpu") is not None and load_metrics("vllm-cpu") != SGLANG_METRICS
    assert load_metrics("fake") is None
