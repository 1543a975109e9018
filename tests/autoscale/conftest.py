"""The gateway tests' rig (a real gateway in front of fake engines) for the cold-model tests."""

from tests.gateway.conftest import rig  # noqa: F401 - a fixture
