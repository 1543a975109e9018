"""fleet.yaml: schema, loading and clear errors."""

from deepfleet.config.cluster import ClusterSpec
from deepfleet.config.load import ConfigError, load, validate
from deepfleet.config.schema import (
    BUNDLED,
    FleetConfig,
    GatewaySpec,
    ModelSpec,
    ParallelSpec,
    default_config,
)

__all__ = [
    "BUNDLED",
    "ClusterSpec",
    "ConfigError",
    "FleetConfig",
    "GatewaySpec",
    "ModelSpec",
    "ParallelSpec",
    "default_config",
    "load",
    "validate",
]
