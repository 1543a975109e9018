"""The KV event relay for a gateway with several worker processes.

Engines connect to one address each and only one process can bind it, so the gateway's main
process binds every engine's events port and republishes each batch, prefixed with the replica
id, on one local PUB endpoint that every worker subscribes to. It asks `ports` (replica id ->
the endpoint to bind) every second as replicas come and go. A thread with its own ZMQ
context: the main process runs no event loop of ours (uvicorn's supervisor owns it).

Use (gateway/server.py, before uvicorn starts the workers; event_ports: routing/follow.py):
    relay = EventRelay(event_ports(state_file), relay_endpoint(state_file))
    relay.start(); ...; relay.stop()
    settings = replace(settings, relay=relay.endpoint)  # handed to every worker's subscriber
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

POLL_MS = 200
REFRESH_S = 1.0


def relay_endpoint(state_file: Path) -> str:
    """The workers' endpoint: a Unix socket beside the state file (local only, no port)."""
    return f"ipc://{state_file.parent / 'kv-events.ipc'}"


class EventRelay:
    def __init__(self, ports: Callable[[], Mapping[str, str]], endpoint: str) -> None:
        self.ports = ports
        self.endpoint = endpoint
        self.forwarded = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kv-event-relay", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        context: zmq.Context[Any] = zmq.Context()
        pub = context.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(self.endpoint)
        subs: dict[str, tuple[str, zmq.Socket[Any]]] = {}
        poller = zmq.Poller()
        self._ready.set()
        refreshed = 0.0

        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now - refreshed >= REFRESH_S:
                    refreshed = now
                    self._follow(context, poller, subs)
                if not subs:
                    # zmq's poll returns at once when it has no socket: wait for the next
                    # look at the state file (or for stop) instead of spinning.
                    self._stop.wait(REFRESH_S)
                    continue
                for sock, _ in poller.poll(POLL_MS):
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                    replica = next((r for r, (_, s) in subs.items() if s is sock), None)
                    if replica is not None and len(frames) == 3:
                        pub.send_multipart([replica.encode(), *frames])
                        self.forwarded += 1
        finally:
            for _, sock in subs.values():
                sock.close(linger=0)
            pub.close(linger=0)
            context.term()

    def _follow(
        self,
        context: zmq.Context[Any],
        poller: zmq.Poller,
        subs: dict[str, tuple[str, zmq.Socket[Any]]],
    ) -> None:
        wanted = self.ports()
        for replica in list(subs):
            endpoint, sock = subs[replica]
            if wanted.get(replica) != endpoint:
                poller.unregister(sock)
                sock.close(linger=0)
                del subs[replica]
        for replica, endpoint in wanted.items():
            if replica in subs:
                continue
            sock = context.socket(zmq.SUB)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError:
                sock.close(linger=0)
                continue
            poller.register(sock, zmq.POLLIN)
            subs[replica] = (endpoint, sock)
