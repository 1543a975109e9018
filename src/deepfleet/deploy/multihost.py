"""Several GPU hosts with containers: what vLLM's run_cluster.sh and the planning document's
hand-typed `vllm serve` did, rendered per node from the config.

`nodes/<name>.sh` starts the official vLLM image on that node with host networking, its
address and NIC in VLLM_HOST_IP and the GLOO/TP/NCCL socket variables, and runs `ray start`
(the head first, with --head; the others join it). `serve.sh`, on the head, starts every
engine inside the head's container with Ray placing its workers, so Ray accounts for every
GPU; the vLLM arguments come from the engine adapter and the planner.

Host networking puts Ray's ports on every NIC of every node, so Ray runs with token
authentication (RAY_AUTH_MODE=token; the token generated at render time in
secrets/ray_auth_token, 0600, mounted read-only: copy the bundle to every node as is) and its
dashboard on 127.0.0.1. The engines and the fleet's KV store listen on the head's configured
address only (the private network), not on every interface; Redis also wants the password in
secrets/kv_store_password.
"""

from __future__ import annotations

import shlex

from deepfleet.deploy.bundle import (
    SECRETS_DIR,
    Bundle,
    Raw,
    Var,
    Word,
    command,
    new_secret,
    script,
)
from deepfleet.deploy.k8s_ray import METRICS_PORT
from deepfleet.deploy.plan import DeployPlan
from deepfleet.engines.offload import container_store

CONTAINER = "deepfleet-ray"
LOG_DIR = "/var/log/deepfleet"
BUNDLE_DIR = '"$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"'
KV_STORE = "deepfleet-kv-store"
RAY_TOKEN_FILE = f"{SECRETS_DIR}/ray_auth_token"
RAY_TOKEN_IN_CONTAINER = "/etc/deepfleet/ray_auth_token"
KV_PASSWORD_FILE = f"{SECRETS_DIR}/kv_store_password"
KV_PASSWORD_VAR = "KV_STORE_PASSWORD"
NODE_BUNDLE_DIR = '"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"'


def ray_auth_flags() -> list[Word]:
    """docker run flags that turn Ray's token authentication on with the bundle's token
    (the script sets BUNDLE_DIR to the bundle's root)."""
    mount = Raw(f'"${{BUNDLE_DIR}}/{RAY_TOKEN_FILE}:{RAY_TOKEN_IN_CONTAINER}:ro"')
    return ["-v", mount, "-e", "RAY_AUTH_MODE=token",
            "-e", f"RAY_AUTH_TOKEN_PATH={RAY_TOKEN_IN_CONTAINER}"]  # fmt: skip


def ray_role(index: int, ray_port: int) -> str:
    """`ray start` flags of node `index` in a node script: the head (its dashboard on loopback
    only) or a node joining it at $HEAD_IP."""
    if index == 0:
        return f"--head --port={ray_port} --dashboard-host=127.0.0.1"
    return f"--address=${{HEAD_IP}}:{ray_port}"


def add_ray_token(bundle: Bundle) -> None:
    bundle.add_private(RAY_TOKEN_FILE, new_secret() + "\n")


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
    role = ray_role(index, d.ray_port)
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
    words += ray_auth_flags()
    words += ["--entrypoint", "/bin/bash", Var("IMAGE"), "-c", Raw(ray)]
    what = "Ray head" if index == 0 else f"Ray worker joining {head.name}"
    return script(
        f"{node.name}: {what} in the official vLLM image (run_cluster.sh equivalent)",
        variables,
        [f"BUNDLE_DIR={NODE_BUNDLE_DIR}", command(words)],
    )


def _store_lines(dp: DeployPlan, bundle: Bundle) -> tuple[list[str], str | None]:
    """serve.sh's lines that start the fleet's own shared KV store on the head (Redis in its
    own container, the LMCache server in the head's), bound to the head's address, and the
    URL engines reach it at (Redis: with the password variable, which serve.sh reads from
    its 0600 file)."""
    head = str(dp.cfg.deploy.nodes[0].address)
    store = container_store(dp.cfg.kv_cache, head)
    if store is None:
        return [], None
    argv, url = store
    argv = [head if a == "0.0.0.0" else a for a in argv]
    lines = ["", f"# the fleet's shared KV store (kv_cache.remote): {url}"]
    words: list[Word]
    if argv[0] == "redis-server":
        bundle.add_private(KV_PASSWORD_FILE, new_secret() + "\n")
        lines += [
            f'{KV_PASSWORD_VAR}="$(cat "${{BUNDLE_DIR}}/{KV_PASSWORD_FILE}")"',
            f"docker rm --force {KV_STORE} >/dev/null 2>&1 || true  # a new, empty cache",
        ]
        words = ["docker", "run", "--detach", "--name", KV_STORE, "--network", "host",
                 "--restart", "unless-stopped", dp.cfg.deploy.images.redis, *argv,
                 "--requirepass", Var(KV_PASSWORD_VAR)]  # fmt: skip
        url = url.replace("://", f"://:${{{KV_PASSWORD_VAR}}}@", 1)
    else:
        inner = f"exec {shlex.join(argv)} >> {shlex.quote(f'{LOG_DIR}/{KV_STORE}.log')} 2>&1"
        words = ["docker", "exec", "--detach", CONTAINER, "/bin/bash", "-c", inner]
    return [*lines, command(words)], url


def _env_word(key: str, value: str) -> Word:
    """KEY=value, with the KV store's password variable expanded by the shell."""
    placeholder = f"${{{KV_PASSWORD_VAR}}}"
    if placeholder not in value:
        return f"{key}={value}"
    prefix, suffix = f"{key}={value}".split(placeholder, 1)
    return Var(KV_PASSWORD_VAR, prefix, suffix)


def _serve_script(dp: DeployPlan, bundle: Bundle) -> str:
    head = str(dp.cfg.deploy.nodes[0].address)
    store, kv_store = _store_lines(dp, bundle)
    lines = [f"BUNDLE_DIR={BUNDLE_DIR}"] if KV_PASSWORD_FILE in bundle.files else []
    lines += [
        f"docker exec {CONTAINER} ray status  # every node should be listed before the engines "
        "start",
        f"docker exec {CONTAINER} mkdir -p {LOG_DIR}",
        *store,
    ]
    for m, r, port in dp.engines():
        spec = m.launch(r, head, port, ray=True, kv_store=kv_store)
        log = f"{LOG_DIR}/{m.name.replace('/', '_')}-{r}.log"
        inner = f"exec {shlex.join(spec.argv)} >> {shlex.quote(log)} 2>&1"
        words: list[Word] = ["docker", "exec", "--detach"]
        for key, value in spec.env.items():
            words += ["-e", _env_word(key, value)]
        words += [CONTAINER, "/bin/bash", "-c", inner]
        lines += ["", f"# {m.name} replica {r}: port {port}, log {log}", command(words)]
    return script(
        f"{dp.cfg.deploy.nodes[0].name}: start the engines inside the Ray head's container",
        {},
        lines,
    )


def render_nodes(dp: DeployPlan, bundle: Bundle) -> None:
    add_ray_token(bundle)
    for i, node in enumerate(dp.cfg.deploy.nodes):
        bundle.add_script(f"nodes/{i:02d}-{node.name}.sh", _node_script(dp, i))
    bundle.add_script("serve.sh", _serve_script(dp, bundle))
