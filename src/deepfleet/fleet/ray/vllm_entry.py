"""vLLM's OpenAI server inside a replica's placement group (replicas that span nodes).

vLLM's Ray executor uses the placement group it finds in its ParallelConfig, which vLLM
fills from `ray.util.get_current_placement_group()` when its server runs inside a Ray actor
(vllm/engine/arg_utils.py); otherwise it creates a PACK group of its own. The engine runs
as a child process of the supervisor actor, not inside it, so this entry point connects to
the cluster, looks up the replica's group by name, and answers vLLM's two questions the way
an actor in that group would before running vLLM's server module unchanged:

    python -m deepfleet.fleet.ray.vllm_entry --model ... (vLLM's own arguments)

with DEEPFLEET_PLACEMENT_GROUP (the group's name) and DEEPFLEET_RAY_NAMESPACE in the
environment, and RAY_ADDRESS for the cluster.
"""

from __future__ import annotations

import os
import runpy
import sys

PG_ENV = "DEEPFLEET_PLACEMENT_GROUP"
NAMESPACE_ENV = "DEEPFLEET_RAY_NAMESPACE"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def main() -> None:
    import ray
    import ray.util
    import vllm.engine.arg_utils as arg_utils

    ray.init(
        address=os.environ.get("RAY_ADDRESS", "auto"),
        namespace=os.environ[NAMESPACE_ENV],
        logging_level="WARNING",
        log_to_driver=False,
    )
    group = ray.util.get_placement_group(os.environ[PG_ENV])
    ray.util.get_current_placement_group = lambda: group
    arg_utils.is_in_ray_actor = lambda: True
    sys.argv = [SERVER_MODULE, *sys.argv[1:]]
    runpy.run_module(SERVER_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
