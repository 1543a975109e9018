"""The KV event relay: one subscriber to every engine, republishing to every gateway process.

Only one process can bind an engine's TCP events port, and one connection per engine to its
Unix socket is enough, so one relay subscribes to every engine (connecting to an `ipc://`
endpoint the engine binds, binding a `tcp://` one the engine connects to: see endpoints.py)
and republishes each batch, prefixed with the replica id, on one local PUB endpoint that every
gateway process subscribes to. It asks `sources` (replica id -> the engine's endpoint and
restart count) every second as replicas come and go.

It also applies every batch to an index of its own and answers snapshot requests on a ROUTER
socket beside the PUB one (snapshot.py), so a subscriber that arrives late (a gateway started
or restarted after the engines announced their blocks) learns what they hold at once instead
of never: KV events are deltas. The snapshot is exact for what the relay saw; a batch the
relay itself missed (it started after the engines published, or the engine dropped it) is
forgotten, as a gateway subscribing directly would (events.py: the replica's blocks are
dropped and learned again from new events).

Who runs it (docs/kv-routing.md, "Several gateways"):
- a gateway with several uvicorn workers: its main process, for its workers (gateway/server.py);
- `gateway.instances: N`: one relay process per node (routing/node_relay.py), supervised by
  the controller like HAProxy, for every instance.

A thread with its own ZMQ context: the gateway's main process runs no event loop of ours
(uvicorn's supervisor owns it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import zmq

from deepfleet.kvcache.endpoints import subscriber_connects
from deepfleet.kvcache.events import EventStreams, Verdict, seq_of
from deepfleet.kvcache.index import KvIndex
from deepfleet.kvcache.snapshot import snapshot_endpoint, take

log = logging.getLogger(__name__)
POLL_MS = 200
REFRESH_S = 1.0


class Source(NamedTuple):
    """Where one replica publishes, and how often it restarted (a restart empties its
    cache: the relay forgets its blocks even before the new engine publishes)."""

    endpoint: str
    restarts: int = 0
    bound: bool = False  # the engine bound `endpoint` (TCP on its node): connect to it

    @property
    def where(self) -> tuple[str, bool]:
        """What the relay's socket to this replica depends on (a restart alone keeps it)."""
        return self.endpoint, self.bound


Sources = Callable[[], Mapping[str, Source]]


def relay_endpoint(state_file: Path, name: str = "kv-events") -> str:
    """A relay's PUB endpoint: a Unix socket beside the state file (local only, no port).
    `kv-events` for a gateway's workers; `kv-node` for the node's relay process."""
    return f"ipc://{state_file.parent / name}.ipc"


def node_relay_endpoint(state_file: Path) -> str:
    """The node relay's PUB endpoint, which every gateway instance subscribes to."""
    return relay_endpoint(state_file, "kv-node")


class EventRelay:
    def __init__(
        self,
        sources: Sources,
        endpoint: str,
        max_blocks: int = 1_000_000,
        also: Sequence[str] = (),
    ) -> None:
        """`also`: more PUB endpoints (a `tcp://IP:PORT` for gateways on other hosts), each
        with its snapshot socket beside it, serving the same batches and snapshots."""
        self.sources = sources
        self.endpoint = endpoint
        self.snapshot_endpoint = snapshot_endpoint(endpoint)
        self.endpoints = (endpoint, *also)
        self.streams = EventStreams(KvIndex(max_blocks))
        self.forwarded = 0
        self.snapshots = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Run in a thread; returns once its sockets are bound (raises if they cannot be)."""
        self._thread = threading.Thread(target=self.run, name="kv-event-relay", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        if self._error is not None:
            raise self._error

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    @property
    def stopping(self) -> bool:
        """True once `stop` was called (a loop that ended without it died)."""
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def run(self) -> None:
        """The relay's loop, until `stop` (in the calling thread)."""
        context: zmq.Context[Any] = zmq.Context()
        pub = context.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)
        pub.setsockopt(zmq.LINGER, 0)
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        subs: dict[str, tuple[Source, zmq.Socket[Any]]] = {}
        try:
            for endpoint in self.endpoints:
                pub.bind(endpoint)
                router.bind(snapshot_endpoint(endpoint))
        except zmq.ZMQError as exc:
            self._error = exc
            self._ready.set()
            pub.close(linger=0)
            router.close(linger=0)
            context.term()
            return
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        self._ready.set()
        refreshed = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now - refreshed >= REFRESH_S:
                    refreshed = now
                    self._follow(context, poller, subs)
                for sock, _ in poller.poll(POLL_MS):
                    if sock is router:
                        self._serve_snapshot(router)
                        continue
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                    replica = next((r for r, (_, s) in subs.items() if s is sock), None)
                    if replica is not None and len(frames) == 3:
                        self._apply(replica, frames)
                        pub.send_multipart([replica.encode(), *frames])
                        self.forwarded += 1
        finally:
            for _, sock in subs.values():
                sock.close(linger=0)
            pub.close(linger=0)
            router.close(linger=0)
            context.term()

    def _apply(self, replica: str, frames: list[bytes]) -> None:
        """Keep the relay's own index in step. A gap (the relay missed batches) forgets the
        replica's blocks and goes on from this batch: there is nobody to ask for them."""
        verdict = self.streams.receive(replica, seq_of(frames[1]), frames[2])
        if verdict is Verdict.GAP:
            self.streams.resync_reset(replica)

    def _serve_snapshot(self, router: zmq.Socket[Any]) -> None:
        frames = router.recv_multipart(zmq.NOBLOCK)
        if len(frames) != 3:
            return
        client, _, replica = frames
        try:
            name = replica.decode()
        except UnicodeDecodeError:
            return
        router.send_multipart([client, b"", take(self.streams, name)])
        self.snapshots += 1

    def _follow(
        self,
        context: zmq.Context[Any],
        poller: zmq.Poller,
        subs: dict[str, tuple[Source, zmq.Socket[Any]]],
    ) -> None:
        wanted = self.sources()
        for replica in list(subs):
            source, sock = subs[replica]
            new = wanted.get(replica)
            if new is not None and new.restarts != source.restarts:
                self.streams.restarted(replica)
                if new.where == source.where:
                    subs[replica] = (new, sock)
                    continue
            if new is None or new.where != source.where:
                poller.unregister(sock)
                sock.close(linger=0)
                del subs[replica]
                if new is None:
                    self.streams.forget(replica)
        for replica, source in wanted.items():
            if replica in subs:
                continue
            sock = context.socket(zmq.SUB)
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.setsockopt(zmq.LINGER, 0)
            try:
                if subscriber_connects(source.endpoint, source.bound):
                    sock.connect(source.endpoint)
                else:
                    sock.bind(source.endpoint)
            except zmq.ZMQError as exc:
                log.warning("cannot bind %s for %s yet: %s", source.endpoint, replica, exc)
                sock.close(linger=0)
                continue
            poller.register(sock, zmq.POLLIN)
            subs[replica] = (source, sock)
