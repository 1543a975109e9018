"""The node's KV event relay process, for `gateway.instances: N` and gateways on other hosts
(kvcache/relay.py).

    python -m deepfleet.routing.node_relay --state-file STATE_DIR/fleet.json

Several gateway processes on one node would each subscribe to every engine: an engine whose
events come over TCP connects to one address that only one of them can bind, and a gateway
that starts (or restarts) after the engines announced their blocks never learns them. So the
controller runs this one process per node as a supervised service (fleet/front.py): it
follows the fleet state, subscribes to every local engine, and serves every gateway instance
the live batches on `ipc://STATE_DIR/kv-node.ipc` and snapshots on
`ipc://STATE_DIR/kv-node-snapshot.ipc`; with `kv_cache.routing.relay_tcp: IP:PORT` it serves
the same on TCP for gateways on other hosts (PORT, snapshots on PORT+1). It serves no client,
so it has little reason to die; if it does, the supervisor starts it again, and what it had
seen is learned again from new events (docs/kv-routing.md, "Several gateways").
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

import zmq

from deepfleet.config.kvcache import read_routing_spec
from deepfleet.kvcache.relay import EventRelay, node_relay_endpoint
from deepfleet.routing.follow import event_ports


def build(state_file: Path) -> EventRelay:
    """The relay of `kv_cache.routing` as the controller wrote it beside the state file: on
    the state dir's Unix socket, and on `relay_tcp` too when it is set."""
    spec = read_routing_spec(state_file.parent)
    also = [f"tcp://{spec.relay_tcp}"] if spec.relay_tcp else []
    return EventRelay(
        event_ports(state_file), node_relay_endpoint(state_file), spec.index_max_blocks, also
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m deepfleet.routing.node_relay",
        description="deepfleet's KV event relay for the gateways of one node (started by the "
        "controller)",
    )
    p.add_argument("--state-file", required=True, type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    relay = build(args.state_file.resolve())

    def stop(signum: int, frame: FrameType | None) -> None:
        relay.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"kv relay: events on {', '.join(relay.endpoints)}, snapshots beside each",
        file=sys.stderr,
        flush=True,
    )
    try:
        relay.start()
    except zmq.ZMQError as exc:
        sys.exit(f"kv relay: cannot bind {', '.join(relay.endpoints)}: {exc}")
    thread = relay.thread
    while thread is not None and thread.is_alive():
        thread.join(1.0)
    print(
        f"kv relay stopped: {relay.forwarded} batches forwarded, {relay.snapshots} snapshots",
        file=sys.stderr,
        flush=True,
    )
    if not relay.stopping:  # the loop died (its traceback is above): the supervisor restarts us
        sys.exit(1)


if __name__ == "__main__":
    main()
