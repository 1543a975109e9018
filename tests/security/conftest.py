"""The gateway rig (tests/gateway/conftest.py) for the security tests that attack the gateway."""

from tests.gateway.conftest import rig

__all__ = ["rig"]
