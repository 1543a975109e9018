"""Several GPU hosts with containers: what vLLM's run_cluster.sh and the planning document's
hand-typed `vllm serve` did, rendered per node from the config.

`nodes/<name>.sh` starts the official vLLM image on that node with host networking, its
address and NIC in VLLM_HOST_IP and the GLOO/TP/NCCL socket variables, and runs `ray start`
(the head first, with --head; the others join it). `serve.sh`, on the head, starts every
engine inside the head's container with Ray placing its workers, so Ray accounts for every
GPU; the vLLM arguments come from the engine adapter and the planner.
"""

from __future__ import annotations

import shlex

from deepfleet.deploy.bundle import Bundle, Raw, Var, Word, command, script
from deepfleet.deploy.k8s_ray import METRICS_PORT
from deepfleet.deploy.plan import DeployPlan
from deepfleet.engines.offload import container_store

CONTAINER = "deepfleet-ray"
LOG_DIR = "/var/log/deepfleet"
KV_STORE = "deepfleet-kv-store"


def _node_script(dp: DeployPlan, index: int) -> str:
    d, c = dp.cfg.deploy, dp.cfg.cluster
    node, head = d.nodes[index], d.nodes[0]
    nic = d.node_interface(node, c)
    variables = {
        **({"HEAD_IP": str(head.address)} if index else {}),
        "NODE_IP": str(node.address),
        **({"NIC": nic} if nic else {}),
        "IMAGE": d.images.vllm,
        "MODEL_DIR": d.model_dir,
        "HF_CACHE": d.hf_cache,
    }
    role = (
        "--head --port=" + str(d.ray_port) if index == 0 else f"--address=${{HEAD_IP}}:{d.ray_port}"
    )
    ray = (
        f'"ray start --block {role} --node-ip-address=${{NODE_IP}} '
        f'--metrics-export-port={METRICS_PORT}"'
    )
    env = [Var("NODE_IP", "VLLM_HOST_IP=")]
    if nic:
        env += [
            Var("NIC", f"{v}=")
            for v in ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
        ]
    words: list[Word] = [
        "docker", "run", "--detach",
        "--name", CONTAINER,
        "--network", "host",
        "--shm-size", f"{d.shm_size_gib}g",
        "--gpus", "all",
        "-v", Raw('"${MODEL_DIR}:${MODEL_DIR}:ro"'),
        "-v", Var("HF_CACHE", suffix=":/root/.cache/huggingface"),
    ]  # fmt: skip
    for e in env:
        words += ["-e", e]
    words += ["--entrypoint", "/bin/bash", Var("IMAGE"), "-c", Raw(ray)]
    what = "Ray head" if index == 0 else f"Ray worker joining {head.name}"
    return script(
        f"{node.name}: {what} in the official vLLM image (run_cluster.sh equivalent)",
        variables,
        [command(words)],
    )


def _store_lines(dp: DeployPlan) -> tuple[list[str], str | None]:
    """serve.sh's lines that start the fleet's own shared KV store on the head (Redis in its
    own container, the LMCache server in the head's), and the URL engines reach it at."""
    store = container_store(dp.cfg.kv_cache, str(dp.cfg.deploy.nodes[0].address))
    if store is None:
        return [], None
    argv, url = store
    lines = ["", f"# the fleet's shared KV store (kv_cache.remote): {url}"]
    words: list[Word]
    if argv[0] == "redis-server":
        lines.append(f"docker rm --force {KV_STORE} >/dev/null 2>&1 || true  # a new, empty cache")
        words = ["docker", "run", "--detach", "--name", KV_STORE, "--network", "host",
                 "--restart", "unless-stopped", dp.cfg.deploy.images.redis, *argv]  # fmt: skip
    else:
        inner = f"exec {shlex.join(argv)} >> {shlex.quote(f'{LOG_DIR}/{KV_STORE}.log')} 2>&1"
        words = ["docker", "exec", "--detach", CONTAINER, "/bin/bash", "-c", inner]
    return [*lines, command(words)], url


def _serve_script(dp: DeployPlan) -> str:
    lines = [
        f"docker exec {CONTAINER} ray status  # every node should be listed before the engines "
        "start",
        f"docker exec {CONTAINER} mkdir -p {LOG_DIR}",
    ]
    store, kv_store = _store_lines(dp)
    lines += store
    for m, r, port in dp.engines():
        spec = m.launch(r, "0.0.0.0", port, ray=True, kv_store=kv_store)
        log = f"{LOG_DIR}/{m.spec.name.replace('/', '_')}-{r}.log"
        inner = f"exec {shlex.join(spec.argv)} >> {shlex.quote(log)} 2>&1"
        words: list[Word] = ["docker", "exec", "--detach"]
        for key, value in spec.env.items():
            words += ["-e", f"{key}={value}"]
        words += [CONTAINER, "/bin/bash", "-c", inner]
        lines += ["", f"# {m.spec.name} replica {r}: port {port}, log {log}", command(words)]
    return script(
        f"{dp.cfg.deploy.nodes[0].name}: start the engines inside the Ray head's container",
        {},
        lines,
    )


def render_nodes(dp: DeployPlan, bundle: Bundle) -> None:
    for i, node in enumerate(dp.cfg.deploy.nodes):
        bundle.add_script(f"nodes/{i:02d}-{node.name}.sh", _node_script(dp, i))
    bundle.add_script("serve.sh", _serve_script(dp))
