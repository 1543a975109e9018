"""`kv_cache:` in the deploy bundles: engines get the offload arguments (parsed by vLLM's own
parser), the fleet's own shared store is a compose service (one host) or started by serve.sh
on the head (several hosts), and Kubernetes asks for a store's URL."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepfleet.deploy.plan import DeployError
from tests.deploy.conftest import CASES, compose_command, render, run, tool

LMCACHE = {"offload": "lmcache", "cpu_gib": 64, "remote": {"kind": "lmcache", "port": 65001}}
REDIS = {"offload": "lmcache", "cpu_gib": 64, "remote": {"kind": "redis", "max_gib": 100}}


def with_kv(case: str, kv_cache: dict[str, Any]) -> dict[str, Any]:
    data = CASES[case].data()
    data["kv_cache"] = kv_cache
    return data


def vllm_args(argv: list[str], parser: Any) -> Any:
    start = argv.index("serve") + 1 if "serve" in argv else argv.index("-m") + 2
    return parser.parse_args(argv[start:])


def test_one_host_compose_runs_the_store_and_points_the_engines_at_it(
    vllm_parser: Any, tmp_path: Path
) -> None:
    bundle = render("compose", with_kv("h200-1x8-compose", LMCACHE))
    services = yaml.safe_load(bundle.files["compose.yaml"])["services"]
    store = services["kv-store"]
    assert store["entrypoint"] == ["python3", "-m", "lmcache.v1.server", "0.0.0.0", "65001"]
    engines = {k: v for k, v in services.items() if k.startswith("engine-")}
    assert len(engines) == 3
    for engine in engines.values():
        assert engine["depends_on"] == ["kv-store"]
        assert engine["environment"]["LMCACHE_REMOTE_URL"] == "lm://kv-store:65001"
        assert engine["environment"]["LMCACHE_MAX_LOCAL_CPU_SIZE"] == "64"
        args = vllm_args(engine["entrypoint"], vllm_parser)
        assert args.kv_transfer_config.kv_connector == "LMCacheConnectorV1"
        assert args.kv_transfer_config.kv_role == "kv_both"
    bundle.write(tmp_path)
    done = run([*compose_command(), "--project-directory", str(tmp_path),
                "-f", str(tmp_path / "compose.yaml"), "config", "--quiet"])  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_native_cpu_offload_needs_no_store() -> None:
    bundle = render("compose", with_kv("h200-1x8-compose", {"offload": "cpu", "cpu_gib": 32}))
    services = yaml.safe_load(bundle.files["compose.yaml"])["services"]
    assert "kv-store" not in services
    argv = services["engine-r1-distill-7b-0"]["entrypoint"]
    config = argv[argv.index("--kv-transfer-config") + 1]
    assert '"kv_connector":"OffloadingConnector"' in config
    assert f'"cpu_bytes_to_use":{32 * 2**30}' in config


def test_several_hosts_start_redis_on_the_head_before_the_engines(
    vllm_parser: Any, tmp_path: Path
) -> None:
    bundle = render("compose", with_kv("r1-8x8-compose", REDIS))
    serve = bundle.files["serve.sh"].replace("\\\n", " ")  # one line per command
    lines = [line for line in serve.splitlines() if line.startswith("docker ")]
    store = shlex.split(next(line for line in lines if "redis-server" in line))
    assert store[:3] == ["docker", "run", "--detach"]
    assert store[store.index("redis-server") :] == [
        "redis-server", "--bind", "10.0.0.1", "--port", "65432", "--save", "", "--appendonly",
        "no", "--maxmemory", str(100 * 2**30), "--maxmemory-policy", "allkeys-lru",
        "--requirepass", "${KV_STORE_PASSWORD}",
    ]  # fmt: skip
    assert serve.index("redis-server") < serve.index("vllm")
    # the head's address, with the password serve.sh reads from its 0600 file
    assert '"LMCACHE_REMOTE_URL=redis://:${KV_STORE_PASSWORD}@10.0.0.1:65432"' in serve
    engine = shlex.split(next(line for line in lines if "vllm" in line))
    inner = shlex.split(engine[-1])
    assert vllm_args(inner[1 : inner.index(">>")], vllm_parser).kv_transfer_config
    bundle.write(tmp_path)
    path = str(tmp_path / "serve.sh")
    assert run(["bash", "-n", path]).returncode == 0
    checked = run([tool("shellcheck"), "--shell=bash", "--severity=style", path])
    assert checked.returncode == 0, checked.stdout


def test_an_existing_store_url_is_used_as_it_is() -> None:
    kv = {**LMCACHE, "remote": {"kind": "redis", "url": "redis://cache.internal:6379"}}
    bundle = render("compose", with_kv("h200-1x8-compose", kv))
    services = yaml.safe_load(bundle.files["compose.yaml"])["services"]
    assert "kv-store" not in services
    env = services["engine-r1-distill-7b-0"]["environment"]
    assert env["LMCACHE_REMOTE_URL"] == "redis://cache.internal:6379"


def test_kubernetes_needs_the_stores_url() -> None:
    with pytest.raises(DeployError) as info:
        render("k8s", with_kv("r1-8x8-k8s", LMCACHE))
    assert info.value.problems[0].startswith("kv_cache.remote.url: on Kubernetes")
    kv = {**LMCACHE, "remote": {"kind": "redis", "url": "redis://redis.kv:6379"}}
    assert "raycluster.yaml" in render("k8s", with_kv("r1-8x8-k8s", kv)).files
