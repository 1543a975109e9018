"""The KV cache layer: KV-event subscriber, global block index, request -> token blocks, the
routing context the gateway holds, and engine arguments for KV offloading."""

from deepfleet.kvcache.context import KV_ROUTING_FILE, RELAY_ENV, RoutingContext
from deepfleet.kvcache.index import KvIndex

__all__ = ["KV_ROUTING_FILE", "RELAY_ENV", "KvIndex", "RoutingContext"]
