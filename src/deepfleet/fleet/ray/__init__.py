"""Cluster mode on Ray: `deepfleet node start` wraps `ray start`, and `deepfleet up` places each
replica in a placement group with one supervisor actor that runs its engine on its node.

Modules that import Ray (launcher, actor, vllm_entry, connect) are imported only in cluster
mode; placement, start and records are pure and import nothing from Ray.
"""
