"""Routing policies, one per file; registered by name in deepfleet.routing.registry."""
