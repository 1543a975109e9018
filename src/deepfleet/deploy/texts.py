"""The prose files of the bundles: the deepfleet Dockerfile and each target's README (the
steps in order, with the plan they were rendered from)."""

from __future__ import annotations

from deepfleet.deploy.k8s_ray import KEY_FILE
from deepfleet.deploy.plan import DeployPlan
from deepfleet.deploy.webui import ADMIN_EMAIL

KUBERAY_OPERATOR_VERSION = "1.2.2"
"""The operator the planning document installs; the RayCluster schema in the tests is its."""


def dockerfile(dp: DeployPlan) -> str:
    image = dp.cfg.deploy.images.deepfleet
    return f"""\
# The deepfleet image ({image}): the official vLLM image plus deepfleet (controller,
# gateway, Ray node commands). Build it from a deepfleet checkout:
#   python -m pip wheel --no-deps -w dist .
#   docker build -f <this file> -t {image} .
FROM {dp.cfg.deploy.images.vllm}
COPY dist/deepfleet-*.whl /tmp/
RUN python3 -m pip install --no-cache-dir /tmp/deepfleet-*.whl && rm /tmp/deepfleet-*.whl
ENTRYPOINT []
"""


def plan_lines(dp: DeployPlan) -> str:
    c = dp.cfg.cluster
    lines = [f"Cluster: {c.nodes} nodes x {c.devices_per_node} {dp.device.name}."]
    for m in dp.models:
        lay = m.layout
        lines.append(
            f"- {m.name} on {m.spec.engine}: {m.replicas} replica(s) of "
            f"{lay.label.rsplit(' x', 1)[0]}"
            f" ({m.devices_per_replica} devices, {m.nodes_per_replica} node(s) each), weights "
            f"{m.weight_format} {m.weight_bytes / 1e9:,.1f} GB, max_model_len "
            f"{lay.max_model_len:,}, max_num_seqs {lay.max_num_seqs}"
        )
        if m.note:
            lines.append(f"  ({m.note})")
    return "\n".join(lines)


def k8s_readme(dp: DeployPlan, gateway_url: str) -> str:
    k = dp.cfg.deploy.kubernetes
    minutes = -(-dp.load_budget_s() // 60)
    weights = (
        f"The Job {k.name}-download fetches the weights into the model volume; the Ray pods "
        "wait for it."
        if k.model_volume.download
        else f"Put the weights in the model volume under `{dp.cfg.deploy.model_dir}` (or set "
        "deploy.kubernetes.model_volume.download: true)."
    )
    webui_admin = ADMIN_EMAIL
    text = f"""\
# deepfleet on Kubernetes (KubeRay)

Rendered by `deepfleet render k8s` from fleet.yaml (copied here; the head reads it from the
Secret {k.name}-config). Edit the config and render again rather than these files.

Secrets: `secrets/` holds what this render generated (Ray's token, Open-WebUI's admin
password; files 0600) and kustomize turns them and fleet.yaml into Secrets. Keep this folder
private. Ray runs with token authentication and its dashboard on 127.0.0.1; the
NetworkPolicies in networkpolicy.yaml admit only the gateway's port (and Open-WebUI's) from
outside the release, so they need a CNI that enforces NetworkPolicy. See docs/security.md.

{plan_lines(dp)}
GPU worker pods: {dp.nodes_used} x {dp.cfg.cluster.devices_per_node} {k.gpu_resource}.

1. Build and push the image `{dp.cfg.deploy.images.deepfleet}` (see Dockerfile).
2. Install the KubeRay operator, e.g.
   `helm install kuberay-operator kuberay/kuberay-operator --version {KUBERAY_OPERATOR_VERSION}`.
3. {weights}
4. `kubectl apply -k .`
5. The head's init container creates the first API key once. Read it with
   `kubectl -n {k.namespace} exec <head pod> -c ray-head -- cat {KEY_FILE}`
   and give it to Open-WebUI (its admin is {webui_admin}, password in
   `secrets/open_webui_admin_password`; signup is off, the admin adds users):
   `kubectl -n {k.namespace} create secret generic {k.name}-api-key --from-literal=key=<secret>`
   then `kubectl -n {k.namespace} rollout restart deployment/{k.name}-open-webui`.
6. Loading may take up to {minutes} minutes (the head's startup probe allows that much; its
   liveness probe checks only the gateway process, so a loading replica is never killed).
7. `kubectl -n {k.namespace} port-forward svc/{k.name}-gateway {dp.cfg.gateway.port}` and use
   http://127.0.0.1:{dp.cfg.gateway.port}/v1; inside the cluster: {gateway_url}/v1.
   To expose it, put a TLS-terminating Ingress or load balancer in front of the gateway
   Service; API keys stay required.
"""
    return text + _gateway_pods_note(dp)


def _gateway_pods_note(dp: DeployPlan) -> str:
    """The README's note on gateway pods (gateway.instances > 1); empty without them."""
    g, k = dp.cfg.gateway, dp.cfg.deploy.kubernetes
    if g.instances == 1:
        return ""
    env, value = (
        (g.state.dsn_env, "'postgresql://USER:PASSWORD@HOST:5432/DB'")
        if g.state.dsn_env
        else ("PGPASSWORD", "PASSWORD")
    )
    secret = k.state_env_secret or "<state_env_secret>"
    return f"""
Gateway pods: the Deployment {k.name}-gateway runs {g.instances} gateways behind the Service;
they follow the fleet state that the head's controller shares through PostgreSQL
(gateway.state). Before step 4, create the Secret they and the head read the database's
password from:
`kubectl -n {k.namespace} create secret generic {secret} --from-literal={env}={value}`
(docs/lb.md, "Kubernetes").
"""


def compose_readme(dp: DeployPlan, multi_host: bool) -> str:
    d = dp.cfg.deploy
    steps = [
        f"1. Build the image `{d.images.deepfleet}` (see Dockerfile).",
    ]
    if multi_host:
        steps += [
            "2. On every node, in the order listed, run its script in `nodes/` (the head first): "
            "it starts the official vLLM image with host networking and joins Ray.",
            "3. On the head, once `docker exec deepfleet-ray ray status` shows every node: "
            "`bash serve.sh` starts the engines inside the head's container.",
            "4. On the head: `docker compose up -d` (gateway, Prometheus, Grafana, Open-WebUI).",
        ]
    else:
        steps.append(
            "2. `docker compose up -d` (engines, gateway, Prometheus, Grafana, Open-WebUI)."
        )
    steps.append(
        f"{len(steps) + 1}. The gateway creates the first API key once, in "
        "`gateway/admin-key.json`; put its secret in `.env` as DEEPFLEET_API_KEY=... and run "
        "`docker compose up -d open-webui` again so the UI can use it."
    )
    mon = d.monitoring
    steps.append(
        f"{len(steps) + 1}. Logins: Grafana `admin` (http://{mon.host}:{mon.grafana_port}), "
        f"Open-WebUI `{ADMIN_EMAIL}` (http://{dp.cfg.ui.host}:{d.open_webui.port}); their "
        "passwords are in `.env`, generated by this render. Open-WebUI's signup is off: the "
        "admin adds users."
    )
    security = (
        "Secrets: `.env` (passwords, read by compose), `secrets/` and `gateway/gateway.json` "
        "are 0600; keep them so. Only the gateway is published on "
        f"{dp.cfg.gateway.host}:{dp.cfg.gateway.port}; Prometheus, Grafana and Open-WebUI on "
        "the addresses above (loopback unless the config says otherwise: "
        "deploy.monitoring.host, ui.host). To expose the gateway, put a TLS terminator in front "
        "of it; API keys stay required. See docs/security.md."
    )
    if multi_host:
        security += (
            "\n\nThe node scripts use host networking, so Ray's ports are on every NIC: Ray runs "
            "with token authentication (`secrets/ray_auth_token`; copy the whole bundle to every "
            "node) and the dashboard on 127.0.0.1 of the head. Engines and the KV store listen "
            f"on the head's address {d.nodes[0].address} only; firewall that network from "
            "anything but the nodes."
        )
    where = (
        "Hosts with deepfleet installed can instead run `deepfleet node start --head` on "
        "the head and `deepfleet node start --join HEAD:PORT` on the others, then "
        "`deepfleet up -f fleet.yaml` on the head."
        if multi_host
        else ""
    )
    return (
        "# deepfleet with docker compose\n\n"
        "Rendered by `deepfleet render compose` from fleet.yaml; edit the config and render "
        "again rather than these files.\n\n"
        f"{plan_lines(dp)}\n\n"
        + "\n".join(steps)
        + ("\n\n" + where if where else "")
        + "\n\n"
        + security
        + "\n"
    )


def ascend_readme(dp: DeployPlan, engine: str, uses_ray: bool) -> str:
    nodes = ", ".join(n.name for n in dp.cfg.deploy.nodes)
    addressing = (
        "Ray and vllm-ascend advertise each host's address"
        if uses_ray
        else f"{engine} advertises the host's address (MindIE: MIES_CONTAINER_IP in the rank table)"
    )
    ray_note = (
        "\nRay runs with token authentication (`secrets/ray_auth_token`, 0600: copy the whole\n"
        "bundle to every node) and its dashboard on 127.0.0.1,"
        if uses_ray
        else ""
    )
    return f"""\
# deepfleet on Ascend

Rendered by `deepfleet render ascend` from fleet.yaml ({engine}); edit the config and render
again rather than these files.

{plan_lines(dp)}
Nodes: {nodes} (the first is the head).

On every node, from its folder in `nodes/`:
1. `bash network.sh` sets each NPU's address, gateway and TLS switch with hccn_tool.
2. `bash check.sh` shows `npu-smi info`, each NPU's link and address, and pings the same NPU
   of every other node; it exits non-zero when a link is down or an address differs.
3. `bash run.sh` starts the engine container (every davinci device and driver mount).

Why host networking: HCCL's collectives run over the NPUs' own RoCE NICs, addressed by the
host's /etc/hccn.conf, and {addressing};
a bridged container would see neither. The price: every port the container opens is on every
interface of the host. So the driver, tools and /etc/hccn.conf are mounted read-only,{ray_note}
and the engine's port {dp.cfg.deploy.engine_port} (the service) is the one to firewall or to put
behind a TLS terminator. See docs/security.md.
"""
