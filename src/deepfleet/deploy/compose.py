"""`deepfleet render compose`: docker compose for one GPU host, and for several hosts the
per-node scripts of multihost.py (the run_cluster.sh setup of the planning document).

One host (cluster.nodes 1): one engine container per replica from the official vLLM image
(its devices reserved by index), the gateway, Prometheus, Grafana and Open-WebUI. Several
hosts: the engines run inside the Ray containers (`nodes/`, `serve.sh`) and the compose file,
run on the head, holds the rest.

The gateway runs without the controller here: `gateway/fleet.json` lists the engines as
ready, and the gateway's passive ejection skips one that refuses (still loading, or down)
until it answers. Prometheus gets a minimal scrape config (gateway, engines, Ray nodes);
Grafana gets Prometheus as its data source.

Only the gateway is published on `gateway.host`; Prometheus and Grafana on
`deploy.monitoring.host`, Open-WebUI on `ui.host` (both 127.0.0.1 unless the config says
otherwise). Passwords are generated at render time into `.env` (0600), which compose reads
for the `${...}` variables of compose.yaml: Grafana's admin, Open-WebUI's admin (created at
start, signup off) and the fleet's Redis store (`--requirepass`; engines use
redis://:PASSWORD@kv-store). The metrics token goes to Prometheus as a 0600 file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from deepfleet.config.disagg import connector_for
from deepfleet.deploy import webui
from deepfleet.deploy.bundle import SECRETS_DIR, Bundle, new_secret, to_yaml
from deepfleet.deploy.k8s_ray import METRICS_PORT
from deepfleet.deploy.multihost import render_nodes
from deepfleet.deploy.plan import DeployError, DeployPlan, ModelDeployment
from deepfleet.deploy.texts import compose_readme, dockerfile
from deepfleet.engines.offload import container_store, with_password
from deepfleet.fleet.pools import NIXL_HOST_ENV
from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus
from deepfleet.net import is_loopback

STATE_DIR = "/var/lib/deepfleet"
KEY_FILE = f"{STATE_DIR}/admin-key.json"
KV_STORE = "kv-store"
GRAFANA_PORT = 3000
HEALTH_INTERVAL_S = 30
ENV_FILE = ".env"
KV_PASSWORD_VAR = "KV_STORE_PASSWORD"
METRICS_TOKEN_FILE = f"{SECRETS_DIR}/metrics_token"


def _required(var: str) -> str:
    """A compose variable that must be set (by .env: run compose from the bundle's folder)."""
    return f"${{{var}:?set in .env; run docker compose from the bundle folder}}"


def engine_service(m: ModelDeployment, replica: int) -> str:
    return "engine-" + re.sub(r"[^a-z0-9]+", "-", f"{m.name}-{replica}".lower()).strip("-")


def _health(url: str, start_period_s: int) -> dict[str, Any]:
    code = f"import urllib.request; urllib.request.urlopen('{url}', timeout=5)"
    return {
        "test": ["CMD", "python3", "-c", code],
        "interval": f"{HEALTH_INTERVAL_S}s",
        "timeout": "10s",
        "retries": 3,
        "start_period": f"{start_period_s}s",
    }


def _endpoints(dp: DeployPlan, multi_host: bool) -> list[tuple[ModelDeployment, int, str]]:
    """(model, replica, base URL) of every engine, as the gateway and Prometheus reach it."""
    head = str(dp.cfg.deploy.nodes[0].address) if multi_host else ""
    out = []
    for m, r, port in dp.engines():
        host = head if multi_host else engine_service(m, r)
        out.append((m, r, f"http://{host}:{port}"))
    return out


def _kv_store(dp: DeployPlan) -> tuple[dict[str, Any], str] | None:
    """The fleet's own shared KV store as a service, and the URL engines reach it at. It
    publishes no port: only the compose network reaches it. Redis also wants the password
    from .env; the LMCache server has no authentication, the network is all it has."""
    store = container_store(dp.cfg.kv_cache, KV_STORE)
    remote = dp.cfg.kv_cache.remote
    if store is None or remote is None:
        return None
    argv, url = store
    images = dp.cfg.deploy.images
    if remote.kind == "lmcache":
        return {"image": images.vllm, "entrypoint": argv, "restart": "unless-stopped"}, url
    argv = [*argv, "--requirepass", _required(KV_PASSWORD_VAR)]
    service = {"image": images.redis, "entrypoint": argv, "restart": "unless-stopped"}
    return service, with_password(url, f"${{{KV_PASSWORD_VAR}}}")


def _side_channel(m: ModelDeployment, service: str) -> dict[str, str]:
    """A NIXL engine advertises its side channel by its service name on the compose network
    (vLLM's default, localhost, is the decode engine's own container)."""
    spec = m.spec.disaggregation
    if not m.role or spec is None or connector_for(m.spec.engine, spec) != "nixl":
        return {}
    return {NIXL_HOST_ENV: service}


def _engines(dp: DeployPlan, kv_store: str | None) -> dict[str, Any]:
    d = dp.cfg.deploy
    services: dict[str, Any] = {}
    next_device = 0
    for m, r, port in dp.engines():
        spec = m.launch(r, "0.0.0.0", port, kv_store=kv_store)
        devices = [str(i) for i in range(next_device, next_device + m.devices_per_replica)]
        next_device += m.devices_per_replica
        services[engine_service(m, r)] = {
            "image": d.images.vllm,
            "entrypoint": spec.argv,
            "environment": {**spec.env, **_side_channel(m, engine_service(m, r))},
            "shm_size": f"{d.shm_size_gib}gb",
            "volumes": [
                f"{d.model_dir}:{d.model_dir}:ro",
                f"{d.hf_cache}:/root/.cache/huggingface",
            ],
            "deploy": {
                "resources": {
                    "reservations": {
                        "devices": [
                            {"driver": "nvidia", "device_ids": devices, "capabilities": ["gpu"]}
                        ]
                    }
                }
            },
            "healthcheck": _health(
                f"http://127.0.0.1:{port}/health",
                m.load_budget_s(d.kubernetes.load_gib_per_s),
            ),
            "restart": "unless-stopped",
        }
        if kv_store:
            services[engine_service(m, r)]["depends_on"] = [KV_STORE]
    return services


def _gateway(dp: DeployPlan, engines: list[str]) -> dict[str, Any]:
    g, d = dp.cfg.gateway, dp.cfg.deploy
    serve = (
        f"python3 -m deepfleet.gateway --state-file {STATE_DIR}/fleet.json --settings "
        f"{STATE_DIR}/gateway.json --host 0.0.0.0 --port {g.port} --workers {g.workers}"
    )
    key = (
        f"umask 077; [ -s {KEY_FILE} ] || deepfleet keys create --name admin --admin --json "
        f"--state-dir {STATE_DIR} > {KEY_FILE}"
    )
    service: dict[str, Any] = {
        "image": d.images.deepfleet,
        "entrypoint": ["/bin/bash", "-c", f"{key}; exec {serve}"],
        "ports": [f"{g.host}:{g.port}:{g.port}"],
        "volumes": [f"./gateway:{STATE_DIR}"],
        "healthcheck": _health(f"http://127.0.0.1:{g.port}/health", 30),
        "restart": "unless-stopped",
    }
    if engines:
        service["depends_on"] = engines
    return service


def fleet_state(dp: DeployPlan, multi_host: bool) -> dict[str, Any]:
    """The gateway's fleet.json: every engine listed as ready (see the module docstring)."""
    g = dp.cfg.gateway
    models = [  # a disaggregated model's two pools route as one model
        ModelRoute(m.spec.name, m.spec.routing, max_model_len=m.layout.max_model_len)
        for m in dp.distinct_models()
    ]
    replicas = [
        ReplicaStatus(
            replica_id=f"{m.name}-{r}",
            model=m.spec.name,
            engine=m.spec.engine,
            url=url,
            state=ReplicaState.READY,
            node=str(dp.cfg.deploy.nodes[0].name) if multi_host else engine_service(m, r),
            role=m.role,
        )
        for m, r, url in _endpoints(dp, multi_host)
    ]
    state = FleetState(0, f"http://{g.host}:{g.port}", models=models, replicas=replicas)
    return state.to_json()


def gateway_settings(dp: DeployPlan) -> str:
    # Open-WebUI and Prometheus reach the gateway by its service name (Host: gateway).
    g = dp.cfg.gateway
    hosts = g.allowed_hosts if "gateway" in g.allowed_hosts else [*g.allowed_hosts, "gateway"]
    spec = g.model_copy(update={"keys_db": Path(STATE_DIR, "keys.db"), "allowed_hosts": hosts})
    return spec.model_dump_json(indent=1) + "\n"


def prometheus_config(dp: DeployPlan, multi_host: bool) -> dict[str, Any]:
    g, mon = dp.cfg.gateway, dp.cfg.deploy.monitoring
    gateway_job: dict[str, Any] = {
        "job_name": "deepfleet-gateway",
        "metrics_path": "/metrics",
        "static_configs": [{"targets": [f"gateway:{g.port}"]}],
    }
    if g.metrics_token:
        gateway_job["authorization"] = {
            "type": "Bearer",
            "credentials_file": "/etc/prometheus/metrics_token",
        }
    engines = [
        {
            "targets": [url.removeprefix("http://")],
            "labels": {"model": m.spec.name, "replica": f"{m.name}-{r}"},
        }
        for m, r, url in _endpoints(dp, multi_host)
    ]
    jobs = [gateway_job, {"job_name": "engines", "static_configs": engines}]
    if multi_host:
        nodes = [f"{n.address}:{METRICS_PORT}" for n in dp.cfg.deploy.nodes]
        jobs.append({"job_name": "ray", "static_configs": [{"targets": nodes}]})
    return {
        "global": {
            "scrape_interval": f"{mon.scrape_interval_s}s",
            "evaluation_interval": f"{mon.scrape_interval_s}s",
        },
        "scrape_configs": jobs,
    }


def _monitoring(
    dp: DeployPlan, bundle: Bundle, env: dict[str, str], multi_host: bool
) -> dict[str, Any]:
    mon, images = dp.cfg.deploy.monitoring, dp.cfg.deploy.images
    services: dict[str, Any] = {}
    if mon.prometheus:
        bundle.add("prometheus/prometheus.yml", to_yaml(prometheus_config(dp, multi_host)))
        services["prometheus"] = {
            "image": images.prometheus,
            "command": [
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
            ],
            "ports": [f"{mon.host}:{mon.prometheus_port}:9090"],
            "volumes": [
                "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
                "prometheus-data:/prometheus",
            ],
            "restart": "unless-stopped",
        }
        token = dp.cfg.gateway.metrics_token
        if token:
            bundle.add_private(METRICS_TOKEN_FILE, token)
            services["prometheus"]["volumes"].append(
                f"./{METRICS_TOKEN_FILE}:/etc/prometheus/metrics_token:ro"
            )
            # The token file is 0600 and the host user's: Prometheus' own user could not
            # read it through the bind mount.
            services["prometheus"]["user"] = "0:0"
    if mon.grafana:
        source = {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "Prometheus",
                    "type": "prometheus",
                    "access": "proxy",
                    "url": "http://prometheus:9090",
                    "isDefault": True,
                }
            ],
        }
        bundle.add("grafana/provisioning/datasources/prometheus.yaml", to_yaml(source))
        env["GRAFANA_ADMIN_PASSWORD"] = new_secret()
        services["grafana"] = {
            "image": images.grafana,
            "environment": {
                "GF_SECURITY_ADMIN_USER": "admin",
                "GF_SECURITY_ADMIN_PASSWORD": _required("GRAFANA_ADMIN_PASSWORD"),
                "GF_USERS_ALLOW_SIGN_UP": "false",
            },
            "ports": [f"{mon.host}:{mon.grafana_port}:{GRAFANA_PORT}"],
            "volumes": [
                "./grafana/provisioning:/etc/grafana/provisioning:ro",
                "grafana-data:/var/lib/grafana",
            ],
            "restart": "unless-stopped",
        }
        if mon.prometheus:
            services["grafana"]["depends_on"] = ["prometheus"]
    return services


def _open_webui(dp: DeployPlan, env: dict[str, str]) -> dict[str, Any]:
    d = dp.cfg.deploy
    env["WEBUI_ADMIN_EMAIL"] = webui.ADMIN_EMAIL
    env["WEBUI_ADMIN_PASSWORD"] = new_secret()
    return {
        "image": d.images.open_webui,
        "environment": {
            "OPENAI_API_BASE_URL": f"http://gateway:{dp.cfg.gateway.port}/v1",
            "OPENAI_API_KEY": "${DEEPFLEET_API_KEY:-}",
            **webui.SETTINGS,
            "WEBUI_ADMIN_EMAIL": _required("WEBUI_ADMIN_EMAIL"),
            "WEBUI_ADMIN_PASSWORD": _required("WEBUI_ADMIN_PASSWORD"),
            "WEBUI_ADMIN_NAME": webui.ADMIN_NAME,
        },
        "ports": [f"{dp.cfg.ui.host}:{d.open_webui.port}:{webui.WEBUI_PORT}"],
        "volumes": ["open-webui:/app/backend/data"],
        "depends_on": ["gateway"],
        "restart": "unless-stopped",
    }


def _check(dp: DeployPlan, multi_host: bool) -> None:
    problems = []
    if is_loopback(dp.cfg.gateway.host):
        problems.append(
            f"gateway.host: {dp.cfg.gateway.host} is loopback inside the gateway container; set "
            "0.0.0.0 (the published port decides who reaches it)"
        )
    if multi_host and not dp.cfg.deploy.nodes:
        problems.append(
            f"deploy.nodes: required for {dp.cfg.cluster.nodes} nodes (name, address and NIC of "
            "each, the head first)"
        )
    if any(m.spec.engine != "vllm" for m in dp.models):
        engines = sorted({m.spec.engine for m in dp.models} - {"vllm"})
        problems.append(
            f"models: the compose target runs the official vLLM image; engine(s) "
            f"{', '.join(engines)} need `deepfleet render ascend` or `deepfleet up`"
        )
    if problems:
        raise DeployError(problems)


def render_compose(dp: DeployPlan, config_text: str) -> Bundle:
    """The compose bundle for `dp`; `config_text` is the fleet.yaml it was planned from."""
    multi_host = dp.cfg.cluster.nodes > 1
    _check(dp, multi_host)
    bundle = Bundle()
    env: dict[str, str] = {}
    store = None if multi_host else _kv_store(dp)
    if store and KV_PASSWORD_VAR in store[1]:
        env[KV_PASSWORD_VAR] = new_secret()
    engines = {} if multi_host else _engines(dp, store[1] if store else None)
    services: dict[str, Any] = {
        **({KV_STORE: store[0]} if store else {}),
        **engines,
        "gateway": _gateway(dp, list(engines)),
        **_monitoring(dp, bundle, env, multi_host),
    }
    volumes: dict[str, Any] = {}
    if "prometheus" in services:
        volumes["prometheus-data"] = {}
    if "grafana" in services:
        volumes["grafana-data"] = {}
    if dp.cfg.deploy.open_webui.enabled:
        services["open-webui"] = _open_webui(dp, env)
        volumes["open-webui"] = {}
    compose: dict[str, Any] = {"name": "deepfleet", "services": services}
    if volumes:
        compose["volumes"] = volumes
    bundle.add("compose.yaml", to_yaml(compose))
    bundle.add("gateway/fleet.json", json.dumps(fleet_state(dp, multi_host), indent=1) + "\n")
    bundle.add_private("gateway/gateway.json", gateway_settings(dp))
    bundle.add_private("fleet.yaml", config_text)
    env["DEEPFLEET_API_KEY"] = ""
    bundle.add_private(ENV_FILE, "".join(f"{k}={v}\n" for k, v in env.items()))
    bundle.add("Dockerfile", dockerfile(dp))
    bundle.add("README.md", compose_readme(dp, multi_host))
    if multi_host:
        render_nodes(dp, bundle)
    return bundle
