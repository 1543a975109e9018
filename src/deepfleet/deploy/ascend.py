"""`deepfleet render ascend`: per-node scripts for Ascend 910B nodes, from the address plan.

For every node, in `nodes/<nn>-<name>/`:
- network.sh: `hccn_tool` address, netmask, gateway, detection address and TLS switch of
  every NPU (what the planning document typed per NPU per node);
- check.sh: `npu-smi info`, each NPU's link (`-link -g`) and address (`-ip -g`) against the
  plan, and a ping from each NPU to the same NPU of every other node; exits 1 on a mismatch;
- run.sh: the engine container with every /dev/davinciN, the manager devices and the driver
  mounts. MindIE: the daemon with the rank table (every NPU address) and this node's
  MIES_CONTAINER_IP. vllm-ascend: one node runs `vllm serve`; several run Ray (the head
  first) and the head's serve.sh starts the engines through it.

The containers use host networking (README.md says why). Driver, tools and /etc/hccn.conf
are mounted read-only (READ_ONLY_MOUNTS: a process in the container must not be able to
rewrite the host's NPU tooling or network config). Ray, when used, runs with token
authentication and its dashboard on 127.0.0.1, as in multihost.py.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from deepfleet.config.deploy import NodeSpec
from deepfleet.deploy.bundle import Bundle, Raw, Var, Word, command, env_flags, script
from deepfleet.deploy.multihost import RAY_TOKEN_FILE, add_ray_token, ray_auth_flags, ray_role
from deepfleet.deploy.plan import DeployError, DeployPlan, ModelDeployment
from deepfleet.deploy.texts import ascend_readme
from deepfleet.engines.registry import get_adapter
from deepfleet.engines.vllm_ascend import node_env

RANK_TABLE = "/etc/deepfleet/rank_table.json"
BUNDLE_DIR = '"$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"'
READ_ONLY_MOUNTS = (
    "/usr/local/dcmi",
    "/usr/bin/hccn_tool",
    "/usr/local/sbin/npu-smi",
    "/usr/local/Ascend/driver",
    "/usr/local/Ascend/firmware",
    "/etc/hccn.conf",
)
"""Host paths mounted read-only whatever deploy.ascend.mounts says (the engines only read
them; written, they would let a container change the host's driver or NPU network)."""


def _folder(i: int, node: NodeSpec) -> str:
    return f"nodes/{i:02d}-{node.name}"


def _npus(dp: DeployPlan, node: NodeSpec) -> list[str]:
    assert node.npu is not None
    return [str(a) for a in node.npu.expand(dp.cfg.cluster.devices_per_node)]


def _network(dp: DeployPlan, node: NodeSpec) -> str:
    a = dp.cfg.deploy.ascend
    assert node.npu is not None
    variables = {
        "NETMASK": str(node.npu.netmask or a.netmask),
        "GATEWAY": str(node.npu.gateway or a.gateway),
        "TLS": "1" if a.tls else "0",
    }
    body = []
    for n, address in enumerate(_npus(dp, node)):
        body += [
            f'hccn_tool -i {n} -ip -s address {address} netmask "${{NETMASK}}"',
            f'hccn_tool -i {n} -gateway -s gateway "${{GATEWAY}}"',
            f'hccn_tool -i {n} -netdetect -s address "${{GATEWAY}}"',
            f'hccn_tool -i {n} -tls -s enable "${{TLS}}"',
        ]
    return script(f"{node.name}: NPU network, one address per NPU", variables, body)


CHECK_FUNCTIONS = """\
failed=0

check_npu() {  # NPU index, planned address
    local link ip
    link="$(hccn_tool -i "$1" -link -g)"
    echo "NPU $1: ${link}"
    if ! grep -q "UP" <<<"${link}"; then
        echo "NPU $1: link is not UP" >&2
        failed=1
    fi
    ip="$(hccn_tool -i "$1" -ip -g)"
    if ! grep -qw -- "$2" <<<"${ip}"; then
        echo "NPU $1: address is not $2: ${ip}" >&2
        failed=1
    fi
}

ping_npu() {  # NPU index, address of the same NPU on another node
    if ! hccn_tool -i "$1" -ping -g address "$2"; then
        echo "NPU $1: no answer from $2" >&2
        failed=1
    fi
}

npu-smi info
"""


def _check(dp: DeployPlan, index: int) -> str:
    nodes = dp.cfg.deploy.nodes
    mine = _npus(dp, nodes[index])
    body = [CHECK_FUNCTIONS]
    body += [f"check_npu {n} {address}" for n, address in enumerate(mine)]
    for j, other in enumerate(nodes):
        if j != index:
            body.append(f"# the same NPUs of {other.name}")
            body += [f"ping_npu {n} {address}" for n, address in enumerate(_npus(dp, other))]
    body.append('exit "${failed}"')
    return script(f"{nodes[index].name}: check NPUs, links and addresses", {}, body)


def rank_table(dp: DeployPlan) -> dict[str, Any]:
    """MindIE's (HCCL's) rank table: every NPU of every node, ranks in node order."""
    servers = []
    rank = 0
    for node in dp.cfg.deploy.nodes:
        devices = []
        for n, address in enumerate(_npus(dp, node)):
            devices.append({"device_id": str(n), "device_ip": address, "rank_id": str(rank)})
            rank += 1
        address = str(node.address)
        servers.append({"server_id": address, "container_ip": address, "device": devices})
    return {
        "version": "1.0",
        "server_count": str(len(servers)),
        "server_list": servers,
        "status": "completed",
    }


def _container(dp: DeployPlan) -> list[Word]:
    d = dp.cfg.deploy
    words: list[Word] = [
        "docker", "run", "--detach",
        "--name", d.ascend.container_name,
        "--network", "host",
        "--shm-size", f"{d.shm_size_gib}g",
    ]  # fmt: skip
    devices = [f"/dev/davinci{n}" for n in range(dp.cfg.cluster.devices_per_node)]
    words += [f"--device={dev}" for dev in [*devices, *d.ascend.devices]]
    for mount in [*d.ascend.mounts, f"{d.model_dir}:{d.model_dir}:ro"]:
        words += ["-v", read_only(mount)]
    return words


def read_only(mount: str) -> str:
    """`mount` with :ro when its host path is one of READ_ONLY_MOUNTS."""
    host, _, rest = mount.partition(":")
    if host.rstrip("/") not in READ_ONLY_MOUNTS:
        return mount
    parts = rest.split(":")
    if len(parts) == 1:
        return f"{mount}:ro"
    options = [o for o in parts[1].split(",") if o not in ("rw", "ro")]
    return f"{host}:{parts[0]}:{','.join(['ro', *options])}"


def _mindie_run(dp: DeployPlan, m: ModelDeployment, index: int) -> str:
    d = dp.cfg.deploy
    node = d.nodes[index]
    spec = m.launch(0, str(d.nodes[0].address), d.engine_port)
    variables = {"NODE_IP": str(node.address), "IMAGE": d.images.mindie}
    words = _container(dp)
    words += ["-v", Raw(f'"${{BUNDLE_DIR}}/rank_table.json:{RANK_TABLE}:ro"')]
    words += env_flags({"MIES_CONTAINER_IP": Var("NODE_IP"), "RANKTABLEFILE": RANK_TABLE})
    words += env_flags(dict(spec.env))
    words += ["--entrypoint", spec.argv[0], Var("IMAGE"), *spec.argv[1:]]
    body = [
        f"BUNDLE_DIR={BUNDLE_DIR}",
        "# MindIE refuses a rank table that others may write.",
        'chmod 640 "${BUNDLE_DIR}/rank_table.json"',
        "",
        command(words),
    ]
    return script(
        f"{node.name}: MindIE ({m.spec.name}) over {len(d.nodes)} node(s)", variables, body
    )


def _vllm_env(dp: DeployPlan, node: NodeSpec, spec_env: dict[str, str]) -> dict[str, Word]:
    nic = dp.cfg.deploy.node_interface(node, dp.cfg.cluster)
    env: dict[str, Word] = {
        k: Var("NIC") if v == nic else Var("NODE_IP") if v == str(node.address) else v
        for k, v in node_env(str(node.address), nic).items()
    }
    return env | spec_env


def uses_ray(dp: DeployPlan) -> bool:
    """vllm-ascend runs through Ray unless a single replica fits the single node."""
    return len(dp.cfg.deploy.nodes) > 1 or len(dp.engines()) > 1


def _vllm_run(dp: DeployPlan, index: int) -> str:
    d, per_node = dp.cfg.deploy, dp.cfg.cluster.devices_per_node
    node = d.nodes[index]
    nic = d.node_interface(node, dp.cfg.cluster)
    variables = {
        **({"HEAD_IP": str(d.nodes[0].address)} if index else {}),
        "NODE_IP": str(node.address),
        **({"NIC": nic} if nic else {}),
        "IMAGE": d.images.vllm_ascend,
    }
    single = not uses_ray(dp)
    m, r, port = dp.engines()[0]
    spec = m.launch(r, "0.0.0.0", port, ray=not single)
    words = _container(dp)
    words += env_flags(_vllm_env(dp, node, dict(spec.env)))
    if single:
        words += ["--entrypoint", spec.argv[0], Var("IMAGE"), *spec.argv[1:]]
        what = f"vllm-ascend ({m.spec.name})"
    else:
        role = ray_role(index, d.ray_port)
        ray = (
            f'"ray start --block {role} --node-ip-address=${{NODE_IP}} '
            f'--resources=\'{{\\"NPU\\": {per_node}}}\'"'
        )
        words += ray_auth_flags()
        words += ["--entrypoint", "/bin/bash", Var("IMAGE"), "-c", Raw(ray)]
        what = "Ray head for vllm-ascend" if index == 0 else f"Ray node joining {d.nodes[0].name}"
    body = [command(words)] if single else [f"BUNDLE_DIR={BUNDLE_DIR}", command(words)]
    return script(f"{node.name}: {what}", variables, body)


def _vllm_serve(dp: DeployPlan) -> str:
    name = dp.cfg.deploy.ascend.container_name
    lines = [f"docker exec {name} ray status  # every node should be listed first"]
    for m, r, port in dp.engines():
        spec = m.launch(r, "0.0.0.0", port, ray=True)
        inner = f"exec {shlex.join(spec.argv)} >> /tmp/{m.name.replace('/', '_')}-{r}.log 2>&1"
        words: list[Word] = ["docker", "exec", "--detach"]
        for key, value in spec.env.items():
            words += ["-e", f"{key}={value}"]
        words += [name, "/bin/bash", "-c", inner]
        lines += ["", f"# {m.name} replica {r}: port {port}", command(words)]
    return script(f"{dp.cfg.deploy.nodes[0].name}: start vllm-ascend through Ray", {}, lines)


def _rank_table(dp: DeployPlan) -> bool:
    """The engine spans nodes by a rank table (MindIE's multi-node mode), not through Ray."""
    return any(get_adapter(m.spec.engine).multi_node == "rank-table" for m in dp.models)


def _problems(dp: DeployPlan) -> list[str]:
    d, c = dp.cfg.deploy, dp.cfg.cluster
    problems = []
    if dp.device.vendor != "huawei":
        problems.append(f"cluster.device: {c.device} is not an Ascend NPU (use Ascend-910B)")
    engines = {m.spec.engine for m in dp.models}
    if any(get_adapter(e).vendor != "ascend" for e in engines) or len(engines) > 1:
        problems.append(
            f"models: one Ascend engine for all models (vllm-ascend or mindie), got "
            f"{', '.join(sorted(engines))}"
        )
    if _rank_table(dp) and (len(dp.models) > 1 or dp.models[0].replicas > 1):
        problems.append(
            "models: MindIE runs one replica of one model over the nodes (its multi-node mode)"
        )
    if len(d.nodes) != c.nodes:
        problems.append(f"deploy.nodes: list all {c.nodes} nodes, the head first")
    problems += [
        f"deploy.nodes[{i}].npu: required (the address plan of its NPUs)"
        for i, n in enumerate(d.nodes)
        if n.npu is None
    ]
    return problems


def render_ascend(dp: DeployPlan, config_text: str) -> Bundle:
    """The Ascend bundle for `dp`; `config_text` is the fleet.yaml it was planned from."""
    if problems := _problems(dp):
        raise DeployError(problems)
    engine = dp.models[0].spec.engine
    bundle = Bundle()
    for i, node in enumerate(dp.cfg.deploy.nodes):
        folder = _folder(i, node)
        bundle.add_script(f"{folder}/network.sh", _network(dp, node))
        bundle.add_script(f"{folder}/check.sh", _check(dp, i))
        run = _mindie_run(dp, dp.models[0], i) if _rank_table(dp) else _vllm_run(dp, i)
        bundle.add_script(f"{folder}/run.sh", run)
    if _rank_table(dp):
        bundle.add("rank_table.json", json.dumps(rank_table(dp), indent=1) + "\n")
    elif uses_ray(dp):
        add_ray_token(bundle)
        bundle.add_script("serve.sh", _vllm_serve(dp))
    bundle.add("fleet.yaml", config_text)
    bundle.add("README.md", ascend_readme(dp, engine, RAY_TOKEN_FILE in bundle.files))
    return bundle
