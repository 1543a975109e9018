"""The gateway's KV event relay (used with --workers > 1) idles without CPU and stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil

from deepfleet.kvcache.relay import EventRelay, relay_endpoint


def thread_cpu_s(thread: threading.Thread) -> float:
    times = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    return times[thread.native_id]


def test_relay_without_event_sources_idles_and_stops_quickly(tmp_path: Path) -> None:
    relay = EventRelay(dict, relay_endpoint(tmp_path / "fleet.json"))  # no engine publishes
    relay.start()
    thread = relay._thread
    assert thread is not None and thread.native_id is not None
    try:
        time.sleep(0.3)
        before = thread_cpu_s(thread)
        time.sleep(1.5)
        used = thread_cpu_s(thread) - before
    finally:
        started = time.monotonic()
        relay.stop()
        stopped_in = time.monotonic() - started
    assert used < 0.05, f"the idle relay thread used {used:.3f} s of CPU in 1.5 s"
    assert not thread.is_alive()
    assert stopped_in < 1.0
