"""The KV event subscriber: one SUB socket per engine, on the endpoint the engine publishes.

Local engines bind a Unix socket in the fleet's 0700 state dir and the subscriber connects to
it (endpoints.py says why, and which side binds what); zmq reconnects by itself when a
restarted engine binds the socket again. An engine given a concrete `tcp://HOST:PORT` connects
its PUB socket there, so the gateway binds that address and a restarted engine simply connects
again. With several gateway workers only one process can bind a port or should hold one
connection per engine, so the server's main process runs an EventRelay (relay.py) that
subscribes to every engine and republishes on one local endpoint, and each worker connects
there instead (frames then start with the replica id).

Gaps (seen through sequence numbers) are closed by a resync. Through a relay there is one way:
its snapshot of the replica (snapshot.py), which a subscriber also asks for as soon as it
learns of a replica, so a gateway that starts after the engines announced their blocks still
knows them. Subscribing directly, in order of preference:
1. replay: the engine's ROUTER replay endpoint (from GET /kv_event_sources) sends every batch
   it still buffers from the missing number on;
2. reset: POST /reset_prefix_cache (vLLM's dev-mode route; the simulator has it): the engine
   drops its prefix cache and publishes AllBlocksCleared, so both sides start empty;
3. forget: the index drops the replica's blocks and learns again from new BlockStored events.

A reader that dies on an unexpected error is started again (a fresh socket, after a backoff
that doubles up to READER_BACKOFF_MAX_S, logged), so one bad message never silently ends KV
routing for the gateway's life; `reader_restarts` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
import zmq
import zmq.asyncio

from deepfleet.kvcache.endpoints import subscriber_connects
from deepfleet.kvcache.events import END_SEQ, EventStreams, Verdict, seq_of
from deepfleet.kvcache.snapshot import decode as decode_snapshot
from deepfleet.kvcache.snapshot import snapshot_endpoint

log = logging.getLogger(__name__)
REPLAY_TIMEOUT_S = 2.0
READER_BACKOFF_S = 0.05
READER_BACKOFF_MAX_S = 5.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


@dataclass(frozen=True)
class Publisher:
    """Where one replica's events arrive and where its HTTP API answers."""

    replica: str
    endpoint: str  # ipc://... (the engine binds, we connect) or tcp://127.0.0.1:5557 (we bind)
    url: str  # the engine's base URL
    bound: bool = False  # the engine bound a TCP `endpoint` itself (a Ray replica's): we connect


class Resyncer:
    """Closes a gap in one replica's stream (see the module docstring)."""

    def __init__(
        self,
        streams: EventStreams,
        session: Callable[[], aiohttp.ClientSession],
        context: zmq.asyncio.Context,
        on_resync: Callable[[str, str], None] | None = None,
        *,
        relay: str | None = None,
    ) -> None:
        self._streams = streams
        self._session = session
        self._context = context
        self._on_resync = on_resync
        self._snapshots = None if relay is None else snapshot_endpoint(relay)

    async def run(self, replica: str, url: str) -> str:
        """Resync `replica`; returns how: snapshot (from the relay), replay, reset or forget."""
        how = "forget"
        try:
            if self._snapshots is not None:
                how = await self._snapshot(replica, self._snapshots)
                if how == "forget":
                    self._streams.resync_reset(replica)
                if self._on_resync is not None:
                    self._on_resync(replica, how)
                return how
            endpoint = await self._replay_endpoint(url)
            if endpoint is not None and await self._replay(replica, endpoint):
                how = "replay"
                self._streams.resync_done(replica)
            else:
                how = "reset" if await self._reset(url) else "forget"
                self._streams.resync_reset(replica)
        except Exception:  # never leave a stream stuck in resync
            log.exception("resync of %s failed", replica)
            self._streams.resync_reset(replica)
        if self._on_resync is not None:
            self._on_resync(replica, how)
        return how

    async def _snapshot(self, replica: str, endpoint: str) -> str:
        """Install the relay's snapshot of `replica`: "snapshot", or "forget" when the relay
        does not answer in time or answers garbage."""
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(endpoint)
            await sock.send_multipart([b"", replica.encode()])
            if not await sock.poll(REPLAY_TIMEOUT_S * 1000):
                log.warning("the KV event relay sent no snapshot of %s in time", replica)
                return "forget"
            frames = await sock.recv_multipart()
        finally:
            sock.close(linger=0)
        try:
            snap = decode_snapshot(frames[-1])
        except msgspec.DecodeError:
            return "forget"
        self._streams.restored(replica, snap.expected, snap.block_size, snap.held)
        return "snapshot"

    async def _replay_endpoint(self, url: str) -> str | None:
        try:
            async with self._session().get(url + "/kv_event_sources", timeout=HTTP_TIMEOUT) as r:
                if r.status != 200:
                    return None
                sources: dict[str, Any] = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        for config in sources.values():
            endpoint = config.get("replay_endpoint") if isinstance(config, dict) else None
            if isinstance(endpoint, str) and endpoint.startswith("tcp://"):
                host = urlsplit(url).hostname or "127.0.0.1"
                return endpoint.replace("*", host)
            if isinstance(endpoint, str) and endpoint.startswith("ipc://"):
                return endpoint
        return None

    async def _replay(self, replica: str, endpoint: str) -> bool:
        start = self._streams.resync_from(replica)
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(endpoint)
            await sock.send_multipart([b"", start.to_bytes(8, "big")])
            covered = True
            while True:
                if not await sock.poll(REPLAY_TIMEOUT_S * 1000):
                    return False
                frames = await sock.recv_multipart()
                if len(frames) < 4:
                    continue
                seq = seq_of(frames[2])
                if seq == END_SEQ:
                    return covered
                covered = covered and self._streams.replayed(replica, seq, frames[3])
        finally:
            sock.close(linger=0)

    async def _reset(self, url: str) -> bool:
        try:
            async with self._session().post(url + "/reset_prefix_cache", timeout=HTTP_TIMEOUT) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


class EventSubscriber:
    """Receives the events of every publisher (or of one relay) into `streams`."""

    def __init__(
        self,
        streams: EventStreams,
        resyncer: Resyncer,
        context: zmq.asyncio.Context,
        *,
        relay: str | None = None,
    ) -> None:
        self.streams = streams
        self._resyncer = resyncer
        self._context = context
        self._relay = relay
        self._publishers: dict[str, Publisher] = {}  # bound (or served by the relay)
        self._wanted: dict[str, Publisher] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._resyncs: dict[str, asyncio.Task[str]] = {}
        self.reader_restarts = 0

    async def start(self) -> None:
        relay = self._relay
        if relay is not None:

            def connect() -> zmq.asyncio.Socket:
                sock = self._sub_socket()
                sock.connect(relay)
                return sock

            self._tasks[""] = asyncio.create_task(
                self._keep_reading(connect, None), name="kv-relay"
            )

    def _sub_socket(self) -> zmq.asyncio.Socket:
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def set_publishers(self, publishers: list[Publisher]) -> None:
        """Subscribe to new publishers, close removed ones (a relay subscribes for us: then
        only the URLs for resync are kept). A port that cannot be bound yet is retried by
        `retry`."""
        self._wanted = {p.replica: p for p in publishers}
        for replica in list(self._publishers):
            if self._wanted.get(replica) != self._publishers[replica]:
                self._close(replica)
        self.retry()

    def retry(self) -> None:
        """Subscribe to the publishers not subscribed yet. An engine that keeps reconnecting
        to a port in the ephemeral range can briefly hold it itself (a TCP self-connect), so a
        failed bind is retried, not fatal."""
        for replica, publisher in self._wanted.items():
            if replica in self._publishers:
                continue
            if self._relay is None:
                try:
                    sock = self._attach(publisher.endpoint, publisher.bound)
                except zmq.ZMQError as exc:
                    log.warning("cannot bind %s for %s yet: %s", publisher.endpoint, replica, exc)
                    continue
                self._tasks[replica] = asyncio.create_task(
                    self._keep_reading(self._reopener(sock, publisher), replica),
                    name=f"kv-events-{replica}",
                )
            self._publishers[replica] = publisher
            if self._relay is not None:  # catch up on what the engine announced before us
                self.streams.begin_resync(replica)
                self._start_resync(replica)

    def _attach(self, endpoint: str, bound: bool = False) -> zmq.asyncio.Socket:
        """A SUB socket connected to an engine's bound endpoint, or bound where it connects."""
        sock = self._sub_socket()
        try:
            if subscriber_connects(endpoint, bound):
                sock.connect(endpoint)
            else:
                sock.bind(endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    def _close(self, replica: str) -> None:
        self._publishers.pop(replica, None)
        task = self._tasks.pop(replica, None)
        if task is not None:
            task.cancel()
        resync = self._resyncs.pop(replica, None)
        if resync is not None:
            resync.cancel()
        self.streams.forget(replica)

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._resyncs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._resyncs.clear()

    def _reopener(
        self, first: zmq.asyncio.Socket, publisher: Publisher
    ) -> Callable[[], zmq.asyncio.Socket]:
        """The attached socket first, then a freshly attached one for each restart."""
        pending = [first]

        def reopen() -> zmq.asyncio.Socket:
            return pending.pop() if pending else self._attach(publisher.endpoint, publisher.bound)

        return reopen

    async def _keep_reading(
        self, open_socket: Callable[[], zmq.asyncio.Socket], replica: str | None
    ) -> None:
        """Run the reader; start it again after any error, with a doubling backoff that
        resets once a reader has lived longer than the backoff."""
        backoff = READER_BACKOFF_S
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._read(open_socket(), replica)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.reader_restarts += 1
                if loop.time() - started > backoff:
                    backoff = READER_BACKOFF_S
                log.exception(
                    "KV event reader for %s died; restarting in %.2fs", replica or "relay", backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, READER_BACKOFF_MAX_S)

    async def _read(self, sock: zmq.asyncio.Socket, replica: str | None) -> None:
        try:
            while True:
                frames = await sock.recv_multipart()
                if replica is None:  # from the relay: [replica, topic, seq, payload]
                    if len(frames) != 4:
                        continue
                    name = frames[0].decode()
                    frames = frames[1:]
                    if name not in self._publishers:
                        continue
                else:
                    name = replica
                if len(frames) != 3:
                    continue
                verdict = self.streams.receive(name, seq_of(frames[1]), frames[2])
                if verdict is Verdict.GAP:
                    self._start_resync(name)
        finally:
            with contextlib.suppress(zmq.ZMQError):
                sock.close(linger=0)

    def _start_resync(self, replica: str) -> None:
        publisher = self._publishers.get(replica)
        if publisher is None or replica in self._resyncs:
            return
        task = asyncio.create_task(self._resyncer.run(replica, publisher.url))
        self._resyncs[replica] = task
        task.add_done_callback(lambda _t: self._resyncs.pop(replica, None))
