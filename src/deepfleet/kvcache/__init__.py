"""The KV cache layer: vLLM KV events and their subscriber and relay, the global block index,
block hashing, request -> token blocks (tokenizers), and engine arguments for KV offloading."""

from deepfleet.kvcache.index import KvIndex

__all__ = ["KvIndex"]
