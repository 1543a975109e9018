"""Issue 12's scenarios: a big model served THROUGH `deepfleet up` on one multi-GPU node.

`r1` (DeepSeek-R1, TP 8 on 8 x H200), `r1-dp` (data-parallel attention 8 + expert parallelism,
vLLM's `--data-parallel-size 8 --enable-expert-parallel`) and `v3-tp2` (the 8-layer V3 slice
with TP 2, or PP 2, on 2 GPUs) each:

1. write a fleet.yaml (engine vllm, the layout, engine_args with `load_format: dummy`,
   max_model_len, gpu_memory_utilization) and validate it with deepfleet's schema;
2. record `deepfleet plan -f fleet.yaml --json` and the planner's roofline at each measured
   concurrency (decode_estimate, context = input + output / 2);
3. start `deepfleet up -f fleet.yaml` (the controller and its gateway, as users run them) and
   wait until every replica and the gateway are ready: the start time;
4. compare the memory lines of the engine's log with the planner (planner_check, the layout's
   prediction per GPU);
5. measure decode: closed loops of 1K-token prompts and 1K output tokens at 1/64/256 streams,
   direct to the engine and through the gateway in alternating rounds; each run is cut at the
   end of its window (no 1K-token drain) and the engine must have aborted every request before
   the next one starts (that the gateway passes the disconnect on is checked too);
6. stop the fleet with `deepfleet down` (also on a timeout) and keep its logs.

With `fake` the controller's engine command finds benchmarks.gpu.fake_vllm under the name
`vllm.entrypoints.openai.api_server` (a shim package first on PYTHONPATH), so the same flow runs
against deepfleet's simulator on a machine without GPUs.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from benchmarks.gpu import planner_check, vllm_log
from benchmarks.gpu.engines import SAFE_ENV, metrics_text
from benchmarks.gpu.load import LoadRunner, completion_spec, random_prompt
from benchmarks.gpu.procs import Budget, Proc, log

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.config.load import validate
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import STATE_FILE, FleetState, ReplicaState, read_state
from deepfleet.planner import Parallelism
from deepfleet.planner.formats import get_format
from deepfleet.planner.roofline import decode_estimate

SHIM = "vllm/entrypoints/openai/api_server.py"


@dataclass(frozen=True)
class ServedSpec:
    """One engine replica of `model` (a folder under the models dir) laid out as given."""

    label: str
    model: str
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: bool = False
    max_model_len: int = 8192
    utilization: float = 0.92
    max_num_seqs: int = 256
    """Per engine core (per DP rank)."""
    graph_sizes: tuple[int, ...] | None = None
    """CUDA graph capture sizes; None: vLLM's (~67 sizes up to 512, each captured per layer)."""
    env: dict[str, str] = field(default_factory=dict)
    gateway_workers: int = 1
    served_name: str = ""
    eager: bool = False
    """--enforce-eager: no torch.compile or CUDA graphs (the short start of the smoke test)."""
    replicas: int = 1
    """Replicas on the one node; deepfleet's local launcher gives each its own GPUs."""

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def name(self) -> str:
        return self.served_name or self.label

    @property
    def parallel(self) -> Parallelism:
        return Parallelism(tp=self.tp, pp=self.pp, attn_dp=self.dp, ep=self.ep)

    def engine_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "load_format": "dummy",
            "gpu_memory_utilization": self.utilization,
            "max_num_seqs": self.max_num_seqs,
        }
        if self.dp > 1:
            # deepfleet's sizing drops the planner's DP/EP flags when `parallel` is fixed in the
            # config (fleet/replicas.py size_model), so they are given as engine arguments.
            args["data_parallel_size"] = self.dp
        if self.ep:
            args["enable_expert_parallel"] = True
        if self.eager:
            args["enforce_eager"] = True
        if self.graph_sizes:
            args["compilation_config"] = {"cudagraph_capture_sizes": list(self.graph_sizes)}
        return args

    def fleet_config(self, model_dir: Path, state_dir: Path, port: int) -> dict[str, Any]:
        """fleet.yaml as a user would write it for this run (one local node of H200s)."""
        parallel: dict[str, Any] = {"tp": self.tp, "pp": self.pp}
        if self.dp > 1:
            parallel["dp"] = self.dp
        if self.ep:
            parallel["ep"] = True
        return {
            "cluster": {"mode": "local", "nodes": 1, "devices_per_node": self.gpus * self.replicas,
                        "device": planner_check.H200},
            "models": [{
                "name": self.name, "source": str(model_dir), "engine": "vllm",
                "replicas": self.replicas,
                "parallel": parallel, "max_model_len": self.max_model_len,
                "engine_args": self.engine_args(), "engine_env": {**SAFE_ENV, **self.env},
                "routing": "round_robin",
            }],
            "gateway": {"host": "127.0.0.1", "port": port, "workers": self.gateway_workers},
            "state_dir": str(state_dir),
        }  # fmt: skip


def pow2_sizes(limit: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to `limit` (and `limit` itself)."""
    sizes = [1]
    while sizes[-1] * 2 <= limit:
        sizes.append(sizes[-1] * 2)
    return tuple(sizes) if sizes[-1] == limit else (*sizes, limit)


DEEPSEEK_ENV = {"VLLM_USE_DEEP_GEMM": "0"}  # shared/gpu/README.md: JIT of 2,052 kernels at start
# Served as "r1", not "deepseek-r1": for an R1-family name deepfleet's adapter adds
# `--reasoning-parser deepseek_r1`, and vLLM 0.26 refuses to build its config when the
# tokenizer has no <think>/</think> tokens (SmolLM2's, the one we carry, has none):
# "DeepSeekR1ReasoningParser reasoning parser could not locate think start/end tokens"
# (found by tests/gpu/test_served.py with vLLM 0.26's create_engine_config).
SCENARIOS: dict[str, ServedSpec] = {
    "r1": ServedSpec("r1", "r1", tp=8, graph_sizes=pow2_sizes(256), env=DEEPSEEK_ENV),
    "r1-dp": ServedSpec("r1-dp", "r1", dp=8, ep=True, max_num_seqs=64,
                        graph_sizes=pow2_sizes(64), env=DEEPSEEK_ENV, served_name="r1"),
    "v3-tp2": ServedSpec("v3-tp2", "dsv3-8l", tp=2, env=DEEPSEEK_ENV),
    # The same flow on one GPU in ~1 minute of engine start: proves it on the single H200.
    "smoke": ServedSpec("smoke", "qwen2-1.5b", max_num_seqs=64, eager=True),
    # Two replicas on a two-GPU machine: each must land on its own GPU (CUDA_VISIBLE_DEVICES).
    "smoke2": ServedSpec("smoke2", "qwen2-1.5b", max_num_seqs=64, eager=True, replicas=2),
}  # fmt: skip


@dataclass(frozen=True)
class Decode:
    """The decode measurement: closed loops, each run cut at the end of its window."""

    concurrencies: tuple[int, ...] = (1, 64, 256)
    input_len: int = 1024
    output_len: int = 1024
    rounds: int = 2
    prefill_tok_s: float = 20000.0
    """Assumed prefill speed, for the ramp before a window (all streams start at once)."""
    window_s: float | None = None
    """None: windows share what is left of the budget (5-30 s)."""

    def ramp_s(self, concurrency: int) -> float:
        return 3.0 + concurrency * self.input_len / self.prefill_tok_s


def roofline(model_dir: str, spec: ServedSpec, decode: Decode) -> list[dict[str, Any]]:
    """The planner's decode roofline of this layout at each concurrency (upper bound)."""
    facts = load_model_facts(model_dir)
    device = get_device(planner_check.H200)
    fmt = get_format(None, facts.shipped_format)
    context = decode.input_len + decode.output_len // 2
    rows = []
    for conc in decode.concurrencies:
        est = decode_estimate(facts, fmt, device, spec.parallel, conc, context)
        rows.append({
            "concurrency": conc, "context": context, "tokens_per_s": round(est.tokens_per_s, 1),
            "per_user_tokens_per_s": round(est.tokens_per_s / conc, 2),
            "step_ms": round(est.step_s * 1000, 3), "bound": est.bound,
        })  # fmt: skip
    return rows


def write_shim(root: Path) -> Path:
    """A package `vllm` whose api_server module runs the fake engine (fake mode only)."""
    path = root / SHIM
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in (root / "vllm", root / "vllm/entrypoints", root / "vllm/entrypoints/openai"):
        (parent / "__init__.py").write_text("")
    path.write_text(
        '"""FAKE vLLM server for deepfleet up (benchmarks/gpu/served.py)."""\n'
        "from benchmarks.gpu.fake_vllm import main\n\nmain()\n"
    )
    return root


def gpu_count() -> int | None:
    """GPUs nvidia-smi lists here; None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return sum(line.startswith("GPU ") for line in done.stdout.splitlines())


def gpu_memory() -> list[dict[str, str]] | None:
    """Per GPU: index and memory used (MiB), as nvidia-smi reports it; None without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    rows = [line.split(",") for line in done.stdout.splitlines() if "," in line]
    return [{"index": i.strip(), "memory_used_mib": m.strip()} for i, m in rows]


def need_gpus(needed: int, fake: bool) -> None:
    """Refuse at once (no device time spent on a start that cannot work)."""
    if fake:
        return
    have = gpu_count()
    if have is not None and have < needed:
        raise RuntimeError(f"needs {needed} GPUs, this machine has {have}")


def _metric_sums(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Each metric summed over its label sets (DP engines report one per rank)."""
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            try:
                out[name] += float(line.rsplit(" ", 1)[1])
            except (ValueError, IndexError):
                continue
    return out


ENGINE_METRICS = (
    "vllm:generation_tokens_total", "vllm:num_requests_running", "vllm:num_requests_waiting",
)  # fmt: skip


async def engine_metrics(url: str) -> dict[str, float] | None:
    try:
        return _metric_sums(await metrics_text(url), ENGINE_METRICS)
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_idle(url: str, within_s: float) -> float | None:
    """Seconds until the engine runs and queues nothing; None if it still does after
    `within_s` (requests of a cut run were not aborted)."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        m = await engine_metrics(url)
        if m and m["vllm:num_requests_running"] + m["vllm:num_requests_waiting"] == 0:
            return round(time.monotonic() - start, 2)
        await asyncio.sleep(0.5)
    return None


class Fleet:
    """`deepfleet up` in the foreground as one of the run's processes; `down` to stop it."""

    def __init__(self, run: Any, spec: ServedSpec, config_path: Path, state_dir: Path) -> None:
        self.run, self.spec, self.config_path, self.state_dir = run, spec, config_path, state_dir
        self.proc: Proc | None = None

    def start(self) -> Proc:
        env: dict[str, str] = {}
        if self.run.fake:
            shim = write_shim(self.run.work / "fake-vllm-shim")
            env["PYTHONPATH"] = os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])
        argv = [sys.executable, "-m", "deepfleet", "up", "-f", str(self.config_path)]
        self.proc = self.run.procs.start(f"{self.spec.label}-up", argv, env)
        return self.proc

    def state(self) -> FleetState | None:
        return read_state(self.state_dir / STATE_FILE)

    def engine_log(self) -> str:
        state = self.state()
        if state is None or not state.replicas or not state.replicas[0].log:
            return ""
        try:
            return Path(state.replicas[0].log).read_text(errors="replace")
        except OSError:
            return ""

    async def wait_ready(self, within_s: float) -> float:
        """Seconds until every replica and the gateway are ready; raises when `up` exits, an
        engine log shows a failure or restarts, or `within_s` passes."""
        assert self.proc is not None
        start = time.monotonic()
        last_note = start
        while True:
            state = self.state()
            if state is not None and state.controller_pid == self.proc.popen.pid:
                replicas = state.replicas
                gateway_ready = (
                    state.gateway is not None and state.gateway.state is ReplicaState.READY
                )
                if (
                    replicas
                    and gateway_ready
                    and all(r.state is ReplicaState.READY for r in replicas)
                ):
                    took = time.monotonic() - start
                    log(f"{self.spec.label}: fleet ready after {took:.0f} s")
                    return took
                if any(r.restarts or r.last_exit for r in replicas):
                    # supervisors restart a failed engine: one failed start is enough here
                    raise RuntimeError(
                        f"the engine exited ({replicas[0].last_exit}): "
                        f"{vllm_log.failure(self.engine_log())}"
                    )
            if not self.proc.alive():
                raise RuntimeError(
                    f"deepfleet up exited ({self.proc.popen.returncode}): {self.proc.text()[-600:]}"
                )
            if time.monotonic() - start > within_s:
                raise TimeoutError(f"{self.spec.label}: not ready in {within_s:.0f} s")
            if time.monotonic() - last_note > 30:
                last_note = time.monotonic()
                tail = [ln for ln in self.engine_log().splitlines() if ln.strip()][-1:] or [""]
                log(f"  waiting for {self.spec.label}: {tail[0][-160:]}")
            await asyncio.sleep(1.0)

    def down(self) -> None:
        """`deepfleet down` (engines get their grace, then SIGKILL), then our process group."""
        if self.proc is None:
            return
        cmd = [sys.executable, "-m", "deepfleet", "down", "--state-dir", str(self.state_dir),
               "--timeout", "40"]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
            log(f"deepfleet down: {done.stdout.strip()[-200:]} {done.stderr.strip()[-200:]}")
        except subprocess.TimeoutExpired:
            log("deepfleet down did not return in 90 s")
        self.run.procs.stop(self.proc)
        for path in sorted((self.state_dir / "logs").glob("*.log")):
            shutil.copyfile(path, self.run.procs.logs / f"{self.spec.label}-{path.name}")


def plan_json(config_path: Path) -> dict[str, Any] | str:
    done = subprocess.run(
        [sys.executable, "-m", "deepfleet", "plan", "-f", str(config_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    try:
        out: dict[str, Any] = json.loads(done.stdout)
        return out
    except json.JSONDecodeError:
        return f"exit {done.returncode}: {done.stdout[-800:]} {done.stderr[-800:]}"


async def served(
    run: Any, spec: ServedSpec, decode: Decode, start_cap_s: float, measure: bool = True
) -> None:
    """One scenario of this module (see its docstring); JSON in OUT/<label>.json."""
    results = run.results(spec.label)
    model_dir = run.models / spec.model
    state_dir = run.work / f"{spec.label}-state"
    config_path = run.work / f"{spec.label}.yaml"
    config = spec.fleet_config(model_dir, state_dir, free_port())
    validate(config, str(config_path))  # deepfleet's schema, as `up` reads it
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    results.put("settings", asdict(spec) | {"gpus": spec.gpus, "decode": asdict(decode),
                                            "start_cap_s": start_cap_s})  # fmt: skip
    results.put("fleet_yaml", config_path.read_text())
    results.put("plan", plan_json(config_path))
    rows = roofline(str(model_dir), spec, decode)
    results.put("roofline", rows)
    pred = planner_check.predict(
        str(model_dir), spec.utilization, spec.max_model_len,
        parallel=spec.parallel, max_num_seqs=spec.max_num_seqs,
    )  # fmt: skip
    need_gpus(spec.gpus * spec.replicas, run.fake)
    fleet = Fleet(run, spec, config_path, state_dir)
    t_up = time.monotonic()
    fleet.start()
    ready: float | None = None
    try:
        try:
            ready = await fleet.wait_ready(min(start_cap_s, run.budget.left() - 30))
        finally:  # the memory lines come before readiness: keep them either way
            facts = vllm_log.parse(fleet.engine_log())
            check = planner_check.compare(pred, facts)
            took = round(time.monotonic() - t_up, 1)
            results.put("startup", facts.as_dict() | {"ready_s": ready, "up_to_ready_s": took})
            results.put("check", check)
            print(planner_check.table(check), flush=True)
        state = fleet.state()
        assert state is not None and state.gateway is not None
        targets = {"direct": state.replicas[0].url, "gateway": state.gateway.url}
        results.put("targets", targets)
        results.put("placement", {
            "replicas": {r.replica_id: {"devices": r.devices, "pid": r.pid}
                         for r in state.replicas},
            "gpus": gpu_memory(),
        })  # fmt: skip
        if measure:
            await decode_rounds(run, results, spec.name, targets, decode, rows)
    except (TimeoutError, RuntimeError) as exc:
        log(f"{spec.label}: {exc}")
        results.put("error", str(exc))
    finally:
        fleet.down()
        results.put("complete", ready is not None and not results.data.get("stopped_early")
                    and "error" not in results.data)  # fmt: skip


async def _one_run(
    loader: LoadRunner, target: str, engine_url: str, model: str, conc: int, decode: Decode,
    window: float, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """One cut run with the engine's counters read at the window's start and end."""
    request = completion_spec(random_prompt(random.Random(seed), decode.input_len),
                              decode.output_len)  # fmt: skip
    ramp = decode.ramp_s(conc)
    go_at = time.perf_counter() + 0.5
    job = asyncio.create_task(asyncio.to_thread(
        loader.run, target, model, request, conc, ramp, window, hard_stop=True, go_at=go_at
    ))  # fmt: skip
    await asyncio.sleep(max(0.0, go_at + ramp - time.perf_counter()))
    m0 = await engine_metrics(engine_url)
    await asyncio.sleep(max(0.0, go_at + ramp + window - time.perf_counter()))
    m1 = await engine_metrics(engine_url)
    row = await job
    row["ramp_s"] = round(ramp, 2)
    row["per_user_tok_s"] = round(row["output_tok_s"] / conc, 2)
    if m0 and m1:
        gen = "vllm:generation_tokens_total"
        row["engine_tok_s"] = round((m1[gen] - m0[gen]) / window, 1)
        row["engine_running_at_start"] = m0["vllm:num_requests_running"]
        row["engine_waiting_at_start"] = m0["vllm:num_requests_waiting"]
    row["abort_s"] = await wait_idle(engine_url, 30.0)
    return row


async def decode_rounds(
    run: Any, results: Any, model: str, targets: dict[str, str], decode: Decode,
    rows: list[dict[str, Any]],
) -> None:  # fmt: skip
    """Direct vs gateway, alternating, per concurrency; windows share what is left."""
    engine_url = targets["direct"]
    loader = LoadRunner()
    budget: Budget = run.budget
    try:
        log("warm-up (first requests compile kernels)")
        short = completion_spec(random_prompt(random.Random(1), 64), 16)
        for url in targets.values():
            loader.run(url, model, short, 1, 0.0, 2.0)
            loader.run(url, model, short, min(64, max(decode.concurrencies)), 0.0, 3.0)
        await wait_idle(engine_url, 30.0)
        runs = len(decode.concurrencies) * decode.rounds * len(targets)
        fixed = sum(decode.ramp_s(c) + 4.0 for c in decode.concurrencies)
        fixed *= decode.rounds * len(targets)
        window = decode.window_s or max(5.0, min(30.0, (budget.left() - 30.0 - fixed) / runs))
        results.put("window_s", round(window, 2))
        log(f"{runs} runs, {window:.1f} s windows")
        seed = 0
        for conc in decode.concurrencies:
            for rnd in range(decode.rounds):
                order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
                for name in order:
                    if budget.left() < decode.ramp_s(conc) + window + 20:
                        log("budget spent: stopping the rounds")
                        results.put("stopped_early", True)
                        return
                    seed += 1
                    row = await _one_run(loader, targets[name], engine_url, model, conc, decode,
                                         window, seed)  # fmt: skip
                    row |= {"target": name, "round": rnd}
                    results.append("runs", row)
                    log(
                        f"{name:>8} c={conc:<4} r={rnd} {row['output_tok_s']:>9.1f} tok/s "
                        f"({row['per_user_tok_s']:.1f}/user) engine {row.get('engine_tok_s')} "
                        f"ITL p50 {row['itl_window_p50_ms']:.2f} ms errors {row['errors']} "
                        f"aborted in {row['abort_s']} s"
                    )
    finally:
        loader.close()
        results.put("summary", decode_summary(results.data.get("runs", []), rows))


def decode_summary(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per concurrency: medians per target, gateway/direct ratio, and the roofline beside."""
    out = []
    roof = {r["concurrency"]: r for r in rows}
    for conc in sorted({r["concurrency"] for r in runs}):
        row: dict[str, Any] = {"concurrency": conc}
        for target in ("direct", "gateway"):
            mine = [r for r in runs if r["concurrency"] == conc and r["target"] == target]
            if not mine:
                continue
            for key in ("output_tok_s", "per_user_tok_s", "itl_window_p50_ms",
                        "itl_window_p99_ms", "ttft_all_p50_ms", "ttft_all_p99_ms"):  # fmt: skip
                row[f"{target}_{key}"] = round(statistics.median(r[key] for r in mine), 3)
            engine = [r["engine_tok_s"] for r in mine if "engine_tok_s" in r]
            if engine:
                row[f"{target}_engine_tok_s"] = round(statistics.median(engine), 1)
            row[f"{target}_errors"] = sum(r["errors"] for r in mine)
            row[f"{target}_not_aborted"] = sum(r["abort_s"] is None for r in mine)
        if "direct_output_tok_s" in row and "gateway_output_tok_s" in row:
            row["throughput_ratio"] = round(
                row["gateway_output_tok_s"] / max(row["direct_output_tok_s"], 1e-9), 4
            )
        if conc in roof:
            row["roofline_tok_s"] = roof[conc]["tokens_per_s"]
            if "direct_output_tok_s" in row:
                row["direct_of_roofline"] = round(
                    row["direct_output_tok_s"] / max(roof[conc]["tokens_per_s"], 1e-9), 4
                )
        out.append(row)
    return out
