"""A COPY of src/deepfleet/gateway (commit 9531fce) for measuring proposed changes; the lead
owns the real one. Each change sits behind an environment switch so one run compares them:

- DFGW_FAST_RELAY=1: StreamCounts.add without generator expressions (one `in` test guards the
  rare patterns), and a plain `readany()` loop instead of `_chain(first, iter_any())`.
- DFGW_RAW_ASGI=1: POST /v1/chat/completions and /v1/completions dispatched by a plain ASGI
  callable in front of Starlette (no middleware stack, Request object or routing), and the
  stream written with uvicorn's own `send` in a loop (no StreamingResponse, no anyio task
  group); a small task watches `receive()` for the client's disconnect.
- DFGW_RAW_UPSTREAM=1: the engine request made by a minimal keep-alive HTTP/1.1 client
  (asyncio Protocol + httptools) instead of aiohttp: one Python callback per HTTP chunk
  instead of aiohttp's several, a lazy read-timeout timer instead of one per read.
"""
