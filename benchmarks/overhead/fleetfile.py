"""Write the benchmark's fleet.json with the deepfleet found on PYTHONPATH.

run.py starts each gateway from some deepfleet's src/ (this tree, or `--baseline-src`, an
older commit); each reads fleet.json with its own dataclasses, and an older one may refuse
keys a newer one writes. So the file is written by the same code that reads it: run.py runs
this script with the target's PYTHONPATH.

    PYTHONPATH=/old/src python benchmarks/overhead/fleetfile.py DIR/fleet.json URL MODEL
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from deepfleet.fleet.state import (
    FleetState,
    ModelRoute,
    ReplicaState,
    ReplicaStatus,
    write_state,
)


def write_fleet(path: Path, backend_url: str, model: str) -> None:
    state = FleetState(
        controller_pid=os.getpid(),
        gateway_url="",
        models=[ModelRoute(model, "round_robin")],
        replicas=[
            ReplicaStatus(
                replica_id=f"{model}-0",
                model=model,
                engine="bench",
                url=backend_url,
                state=ReplicaState.READY,
                ready_at=time.time(),
            )
        ],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_state(path, state)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    write_fleet(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
