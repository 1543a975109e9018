"""Issue 12's scenarios checked without GPUs: the fleet.yaml each generates validates and fits,
the vLLM command deepfleet's local launcher builds from it is accepted by vLLM's own parser
(the CPU venv's 0.32 in process; 0.26, the device's, from the wheel prepare.sh downloads), the
fake engine's memory lines come back through the planner check, and the whole flow runs
through `deepfleet up` with fake engines."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import psutil
import pytest
from benchmarks.gpu import fake_vllm, model_dirs, planner_check, served, vllm_log
from benchmarks.gpu.load import _Live

from deepfleet.catalog import bundled
from deepfleet.catalog.models import load_model_facts
from deepfleet.config.load import validate
from deepfleet.engines import get_adapter
from deepfleet.engines.offload import offload_plans
from deepfleet.engines.vllm import SERVER_MODULE
from deepfleet.fleet.replicas import MachineFacts, plan_local, size_fleet
from deepfleet.planner import plan
from deepfleet.planner.fleet import cluster_for, model_facts_for, request_for

ROOT = Path(__file__).parents[2]
WHEEL_026 = sorted((ROOT / ".gpu-wheels").glob("vllm-0.26.0-*.whl"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    model_dirs.write_models(out, bundled.prepare().path)
    return out


def config(name: str, models: Path, tmp: Path) -> dict[str, Any]:
    spec = served.SCENARIOS[name]
    return spec.fleet_config(models / spec.model, tmp / "state", 18000)


def launched(name: str, models: Path, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """The engine command `deepfleet up` runs for this scenario: the local launcher's plan,
    the controller's offload step, the vLLM adapter (fleet/launcher.py, controller.py)."""
    cfg = validate(config(name, models, tmp))
    paths = {cfg.models[0].name: cfg.models[0].source}
    plans = plan_local(cfg, paths, MachineFacts([0, 1], 2**40), "python3")
    plans, notes = offload_plans(plans, cfg.kv_cache)
    assert len(plans) == 1 and notes == []
    spec = get_adapter("vllm").launch_spec(plans[0])
    return spec.argv[spec.argv.index(SERVER_MODULE) + 1 :], spec.env


def test_r1_folder(models: Path) -> None:
    r1 = load_model_facts(str(models / "r1"))
    assert r1.num_layers == 61 and r1.moe is not None and r1.mla is not None
    assert (r1.dense_layer_count, r1.moe_layer_count, r1.mtp_layers) == (3, 58, 0)
    assert r1.shipped_format == "fp8" and r1.vocab_size == 49152
    cfg = json.loads((models / "r1" / "config.json").read_text())
    assert cfg["architectures"] == ["DeepseekV3ForCausalLM"] and "auto_map" not in cfg
    assert cfg["quantization_config"]["weight_block_size"] == [128, 128]
    assert cfg["num_nextn_predict_layers"] == 0
    assert (models / "r1" / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("r1", (8, 1, 1, False)),
        ("r1-dp", (1, 1, 8, True)),
        ("v3-tp2", (2, 1, 1, False)),
        ("smoke", (1, 1, 1, False)),
    ],
)
def test_fleet_yaml_validates_and_fits(
    name: str, layout: tuple[int, int, int, bool], models: Path, tmp_path: Path
) -> None:
    cfg = validate(config(name, models, tmp_path), f"{name}.yaml")
    assert cfg.cluster.devices_per_node == served.SCENARIOS[name].gpus
    best = plan(
        model_facts_for(cfg.models[0]), cluster_for(cfg), request_for(cfg.models[0])
    ).recommended
    assert best is not None and best.feasible
    assert (best.tp, best.pp, best.attn_dp, best.ep) == layout
    (sizing,) = size_fleet(cfg)  # what `deepfleet up` does first: it does not refuse
    assert sizing.replicas == 1 and (sizing.tp, sizing.pp) == layout[:2]


def test_r1_prediction(models: Path) -> None:
    """R1 on 8 x H200 as the planner sees it (per GPU; KV of MLA is not split by TP)."""
    tp8 = served.SCENARIOS["r1"]
    pred = planner_check.predict(str(models / "r1"), 0.92, 8192, parallel=tp8.parallel,
                                 max_num_seqs=tp8.max_num_seqs)  # fmt: skip
    assert pred.feasible and pred.kv_bytes_per_token == 576 * 2 * 61
    assert 75 < pred.weights_bytes / 2**30 < 82
    assert pred.kv_tokens > 256 * 2048  # 256 streams of 1K in + 1K out fit
    dp = served.SCENARIOS["r1-dp"]
    pred_dp = planner_check.predict(str(models / "r1"), 0.92, 8192, parallel=dp.parallel,
                                    max_num_seqs=dp.max_num_seqs)  # fmt: skip
    assert pred_dp.feasible and pred_dp.weights_bytes > pred.weights_bytes  # attention copies
    assert pred_dp.kv_tokens > pred.kv_tokens  # each rank its own cache


def test_vllm_accepts_the_r1_commands(vllm_parser: Any, models: Path, tmp_path: Path) -> None:
    argv, env = launched("r1", models, tmp_path)
    a = vllm_parser.parse_args(argv)
    assert a.tensor_parallel_size == 8 and a.pipeline_parallel_size == 1
    assert a.load_format == "dummy" and a.max_model_len == 8192 and a.max_num_seqs == 256
    assert a.gpu_memory_utilization == pytest.approx(0.92)
    assert not a.reasoning_parser and a.served_model_name == ["r1"]  # see SCENARIOS
    assert a.data_parallel_size == 1 and not a.enable_expert_parallel
    assert "--compilation-config" in argv and "256" in argv[argv.index("--compilation-config") + 1]
    assert env["VLLM_USE_DEEP_GEMM"] == "0" and env["NCCL_NVLS_ENABLE"] == "0"
    argv, _ = launched("r1-dp", models, tmp_path)
    a = vllm_parser.parse_args(argv)
    assert a.data_parallel_size == 8 and a.enable_expert_parallel is True
    assert a.tensor_parallel_size == 1 and a.max_num_seqs == 64
    argv, _ = launched("v3-tp2", models, tmp_path)
    a = vllm_parser.parse_args(argv)
    assert a.tensor_parallel_size == 2 and "--compilation-config" not in argv


@pytest.mark.slow
@pytest.mark.skipif(
    not WHEEL_026, reason="no .gpu-wheels/vllm-0.26.0 wheel (scripts/gpu/prepare.sh)"
)
def test_vllm_026_accepts_the_commands_and_reads_r1(models: Path, tmp_path: Path) -> None:
    """vLLM 0.26 (the device's) from its wheel's Python files: its parser takes every command,
    its ModelConfig reads the r1 folder as DeepseekV3 with fp8, MLA and no MTP, and its
    create_engine_config builds each whole config (on the CPU platform) (~20 s)."""
    site = tmp_path / "vllm026"
    with zipfile.ZipFile(WHEEL_026[0]) as wheel:
        wheel.extractall(site, [n for n in wheel.namelist()
                                if n.endswith((".py", ".json")) or ".dist-info/" in n])  # fmt: skip
    argvs = [launched(name, models, tmp_path)[0] for name in ("r1", "r1-dp", "v3-tp2")]
    # What deepfleet would run for a model named deepseek-r1: with the reasoning parser
    r1_named = [*argvs[0], "--reasoning-parser", "deepseek_r1"]
    argvs.append(r1_named)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests/gpu/vllm_check.py")], input=json.dumps(argvs),
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(site)},
    )  # fmt: skip
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("VLLM_CHECK ")]
    assert done.returncode == 0 and line, done.stdout[-2000:] + done.stderr[-3000:]
    r1, r1dp, v3, named = json.loads(line[0].removeprefix("VLLM_CHECK "))
    assert r1["version"] == "0.26.0"
    assert r1["args"]["tensor_parallel_size"] == 8 and r1["args"]["load_format"] == "dummy"
    assert r1["capture_sizes"] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert r1["model"] == {
        "architectures": ["DeepseekV3ForCausalLM"], "quantization": "fp8", "use_mla": True,
        "num_hidden_layers": 61, "num_nextn_predict_layers": 0, "n_routed_experts": 256,
        "max_model_len": 8192, "vocab_size": 49152,
    }  # fmt: skip
    assert r1dp["args"]["data_parallel_size"] == 8 and r1dp["args"]["enable_expert_parallel"]
    assert r1dp["args"]["data_parallel_backend"] == "mp"  # one node: no Ray
    assert v3["args"]["tensor_parallel_size"] == 2 and v3["model"]["num_hidden_layers"] == 8
    # vLLM 0.26 builds each whole config (model, parallel, cache, scheduler; CPU platform)
    assert r1["engine_config"] == {"ok": True, "tp": 8, "pp": 1, "dp": 1, "ep": False,
                                   "world_size": 8, "max_num_seqs": 256}  # fmt: skip
    assert r1dp["engine_config"] == {"ok": True, "tp": 1, "pp": 1, "dp": 8, "ep": True,
                                     "world_size": 1, "max_num_seqs": 64}  # fmt: skip
    assert v3["engine_config"]["ok"] is True and v3["engine_config"]["tp"] == 2
    # ... and refuses R1's reasoning parser with SmolLM2's tokenizer: hence the name "r1"
    assert named["engine_config"]["ok"] is False
    assert "think start/end tokens" in named["engine_config"]["error"]


def _fake_lines(model: Path, spec: served.ServedSpec) -> str:
    args = argparse.Namespace(
        model=str(model), gpu_memory_utilization=spec.utilization, max_model_len=8192,
        kv_cache_memory_bytes=None, max_num_seqs=spec.max_num_seqs, tensor_parallel_size=spec.tp,
        pipeline_parallel_size=spec.pp, data_parallel_size=spec.dp, enable_expert_parallel=spec.ep,
    )  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fake_vllm.startup_lines(args, 1.0)
    return out.getvalue()


@pytest.mark.parametrize("name", ["r1", "r1-dp"])
def test_fake_lines_round_trip_through_the_check(name: str, models: Path) -> None:
    spec = served.SCENARIOS[name]
    facts = vllm_log.parse(_fake_lines(models / "r1", spec))
    assert sorted(facts.kv_tokens_by_rank) == list(range(spec.dp))
    pred = planner_check.predict(str(models / "r1"), 0.92, 8192, parallel=spec.parallel,
                                 max_num_seqs=spec.max_num_seqs)  # fmt: skip
    check = planner_check.compare(pred, facts)
    assert check["all_within_target"] is True and check["kv_token_ranks"] == spec.dp
    assert check["settings"]["parallel"]["attn_dp"] == spec.dp


def test_dp_ranks_missing_count_the_first_rank_for_all(models: Path) -> None:
    spec = served.SCENARIOS["r1-dp"]
    text = "\n".join(ln for ln in _fake_lines(models / "r1", spec).splitlines()
                     if "EngineCore_DP3" not in ln or "KV cache size" not in ln)  # fmt: skip
    facts = vllm_log.parse(text)
    assert len(facts.kv_tokens_by_rank) == 7
    pred = planner_check.predict(str(models / "r1"), 0.92, 8192, parallel=spec.parallel,
                                 max_num_seqs=spec.max_num_seqs)  # fmt: skip
    rows = {r["quantity"]: r for r in planner_check.compare(pred, facts)["rows"]}
    assert rows["kv_tokens"]["measured"] == facts.kv_tokens_by_rank[0] * 8


def test_small_pieces() -> None:
    assert served.pow2_sizes(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert served.pow2_sizes(48) == (1, 2, 4, 8, 16, 32, 48)
    text = ('vllm:num_requests_running{engine="0"} 3.0\nvllm:num_requests_running{engine="1"} 2\n'
            "# HELP x\nvllm:generation_tokens_total 10\nother 1\n")  # fmt: skip
    sums = served._metric_sums(text, served.ENGINE_METRICS)
    assert sums == {"vllm:generation_tokens_total": 10.0, "vllm:num_requests_running": 5.0,
                    "vllm:num_requests_waiting": 0.0}  # fmt: skip
    live = _Live()
    assert live.record() is None  # cut before its first token: neither result nor error
    live.times = [live.started + 0.5, live.started + 0.6, live.started + 0.8]
    ok, error, _, first, gaps, tokens = live.record() or (False, "", 0, 0, (), 0)
    assert ok and error == "" and first == pytest.approx(0.5) and tokens == 3
    assert gaps == pytest.approx((0.1, 0.2))
    assert served.Decode().ramp_s(256) == pytest.approx(3.0 + 256 * 1024 / 20000)


def test_decode_summary() -> None:
    def run(target: str, tok: float) -> dict[str, Any]:
        return {"concurrency": 64, "target": target, "output_tok_s": tok,
                "per_user_tok_s": tok / 64, "itl_window_p50_ms": 20.0, "itl_window_p99_ms": 30.0,
                "ttft_all_p50_ms": 300.0, "ttft_all_p99_ms": 900.0, "errors": 0,
                "abort_s": 0.5, "engine_tok_s": tok}  # fmt: skip

    (row,) = served.decode_summary(
        [run("direct", 4000), run("gateway", 3900), run("direct", 4200), run("gateway", 4100)],
        [{"concurrency": 64, "tokens_per_s": 8000.0}],
    )
    assert row["throughput_ratio"] == pytest.approx(4000 / 4100, abs=1e-4)
    assert row["direct_of_roofline"] == pytest.approx(4100 / 8000, abs=1e-4)
    assert row["gateway_not_aborted"] == 0
    assert row["direct_per_user_tok_s"] == pytest.approx(4100 / 64, abs=1e-3)


@pytest.mark.slow
def test_fake_issue12_flow_through_deepfleet_up(models: Path, tmp_path: Path) -> None:
    """r1, r1-dp and v3-tp2 through `deepfleet up` (fake engines behind the controller), then
    routing with one GPU per engine; every process stopped, every JSON complete."""
    out = tmp_path / "out"
    cmd = [
        sys.executable, str(ROOT / "scripts/gpu/run_scenario.py"), "--fake", "--out", str(out),
        "--models", str(models), "--budget", "240", "--decode-concurrency", "1,4",
        "--decode-input", "128", "--decode-output", "256", "--decode-rounds", "1",
        "--decode-window", "3", "--routing-gpus-per-engine", "1", "--routing-kv-gib", "1",
        "--groups", "2", "--users", "2", "--turns", "2", "--system-len", "200",
        "--history-len", "200", "--routing-max-tokens", "8", "--policy-limit", "20",
        "r1", "r1-dp", "v3-tp2", "routing",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=330, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    time.sleep(1.0)
    left = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(str(models) in arg or str(out) in arg for arg in (p.info["cmdline"] or []))
    ]
    assert left == [], f"processes left behind: {left}"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["logs.txt", "r1-dp.json", "r1.json", "routing.json", "v3-tp2.json"], (
        done.stdout[-3000:]
    )
    for name, gpus in (("r1", 8), ("r1-dp", 8), ("v3-tp2", 2)):
        data = json.loads((out / f"{name}.json").read_text())
        assert data["complete"] is True, data.get("error")
        assert data["settings"]["gpus"] == gpus
        assert data["check"]["all_within_target"] is True
        assert data["plan"]["recommended"]["devices"] == gpus
        assert data["startup"]["up_to_ready_s"] > 0
        summary = {r["concurrency"]: r for r in data["summary"]}
        assert sorted(summary) == [1, 4]
        for row in summary.values():
            assert row["direct_errors"] == 0 and row["gateway_errors"] == 0
            assert row["direct_not_aborted"] == 0 and row["gateway_not_aborted"] == 0
            assert row["throughput_ratio"] > 0.5 and row["roofline_tok_s"] > 0
    assert json.loads((out / "r1-dp.json").read_text())["check"]["kv_token_ranks"] == 8
    routing = json.loads((out / "routing.json").read_text())
    assert routing["complete"] is True
    assert routing["settings"]["devices"] == ["0", "1"]
    assert routing["settings"]["gpu_memory_utilization"] == 0.92
    logs = (out / "logs.txt").read_text()
    assert "===== r1-r1-0.log" in logs and "===== r1-gateway.log" in logs


def test_smoke2_gives_each_replica_its_own_gpu(models: Path, tmp_path: Path) -> None:
    cfg = validate(config("smoke2", models, tmp_path))
    assert cfg.cluster.devices_per_node == 2 and cfg.models[0].replicas == 2
    paths = {cfg.models[0].name: cfg.models[0].source}
    machine = MachineFacts([0, 1], 2**40, {"nvidia": ["0", "1"], "ascend": []})
    plans = plan_local(cfg, paths, machine, "python3")
    assert [p.devices for p in plans] == [("0",), ("1",)]
