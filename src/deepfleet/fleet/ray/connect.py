"""Connect this process to the fleet's Ray cluster (the controller, `doctor`).

The address is the config's `cluster.head` (HOST or HOST:PORT), else the node record that
`deepfleet node start` left in the state dir, else RAY_ADDRESS. When the record says the
cluster uses token authentication, the same token file is used to connect.
"""

from __future__ import annotations

import os
from pathlib import Path

from deepfleet.config.schema import FleetConfig
from deepfleet.fleet.launcher import Launcher, LauncherError
from deepfleet.fleet.ray.records import NodeRecord
from deepfleet.fleet.ray.start import RAY_PORT

NAMESPACE = "deepfleet"


class ClusterUnreachable(LauncherError):
    pass


def head_address(head: str) -> str:
    """`10.0.0.1` -> `10.0.0.1:6379`; an address with a port is kept."""
    return head if ":" in head.rsplit("]", 1)[-1] else f"{head}:{RAY_PORT}"


def cluster_address(cfg: FleetConfig, state_dir: Path) -> str:
    if cfg.cluster.head:
        return head_address(cfg.cluster.head)
    record = NodeRecord.load(state_dir)
    if record is not None:
        return record.address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    raise ClusterUnreachable(
        "no Ray cluster to use: set cluster.head in the config, start one here with "
        "`deepfleet node start --head`, or set RAY_ADDRESS"
    )


def auth_env(state_dir: Path) -> dict[str, str]:
    record = NodeRecord.load(state_dir)
    if record is None or not record.token_path:
        return {}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": record.token_path}


def apply_auth_env(state_dir: Path) -> None:
    """Put the cluster's authentication settings in this process's environment. Ray reads
    them once, when it is first imported, so call this before anything imports ray."""
    for key, value in auth_env(state_dir).items():
        os.environ.setdefault(key, value)


def make_launcher(cfg: FleetConfig, state_dir: Path) -> Launcher:
    """The Ray launcher (the `ray` entry of the launcher registry), connected.

    The launcher module imports ray, so it is imported here, after `connect` has put the
    cluster's authentication settings in the environment."""
    address = connect(cfg, state_dir)
    from deepfleet.fleet.ray.launcher import RayLauncher

    return RayLauncher(cfg, state_dir, address=address, namespace=NAMESPACE)


def remove_fleet(state_dir: Path) -> list[str]:
    """`deepfleet down` in Ray mode, once the controller is gone: kill the fleet's detached
    supervisor actors (their guards kill the engines) and remove its placement groups;
    returns their names (deepfleet.fleet.ray.detached)."""
    apply_auth_env(state_dir)
    from deepfleet.fleet.ray.detached import remove_recorded

    return remove_recorded(state_dir)


def connect(cfg: FleetConfig, state_dir: Path) -> str:
    """ray.init to the fleet's cluster in deepfleet's namespace; returns the address."""
    apply_auth_env(state_dir)
    from deepfleet.fleet.ray.detached import RAY_INIT_ERRORS, ray_init

    address = cluster_address(cfg, state_dir)
    try:
        ray_init(address, NAMESPACE)
    except RAY_INIT_ERRORS as exc:
        raise ClusterUnreachable(
            f"cannot connect to Ray at {address}: {exc}; start the head with "
            f"`deepfleet node start --head` and check `deepfleet doctor`"
        ) from exc
    return address
