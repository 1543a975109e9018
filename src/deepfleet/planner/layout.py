"""Layouts: how one replica is split over the cluster, and whether it fits.

Candidates (`candidates`): TP over devices inside a node (a divisor of devices_per_node), PP
stages inside a node when a replica needs less than a node, or one stage per node when TP
fills a node; DP replicas fill the rest. MLA + MoE models (DeepSeek-V3/R1) also get
data-parallel attention with expert parallelism (vLLM's `--data-parallel-size N
--enable-expert-parallel`): attention replicated per device, each device its own requests
and KV, experts divided over all devices of the replica.

`evaluate` checks, in order: the format runs on the device, TP divides the heads (and the
quantization blocks), PP does not exceed the layers, the weights fit, weights + activations +
reserve fit, one `max_model_len` sequence fits in the KV room, and the requested concurrency
fits. The first failure is the layout's `reason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deepfleet.catalog.hardware import Device, GiB
from deepfleet.catalog.models import ModelFacts
from deepfleet.planner.formats import WeightFormat, kv_dtype_bytes
from deepfleet.planner.kv import GPU_BLOCK_SIZE, cpu_block_size, kv_capacity
from deepfleet.planner.memory import DeviceMemory, MemoryInputs, Parallelism, device_memory
from deepfleet.planner.roofline import Network, decode_estimate

DEFAULT_CONTEXT = 32768
"""Context planned when none is asked: R1's reasoning traces run 8-32K tokens."""
MIN_CONTEXT = 4096
"""Below this a reasoning model cuts most answers short; a layout must hold one."""
QUANT_BLOCK = 128


@dataclass(frozen=True)
class ClusterShape:
    """Identical nodes of `devices_per_node` devices; `network_bandwidth` between nodes in
    bytes/s (25e9: the 200 Gb/s InfiniBand of the planning document)."""

    device: Device
    nodes: int = 1
    devices_per_node: int = 1
    network_bandwidth: float = 25e9

    @property
    def devices(self) -> int:
        return self.nodes * self.devices_per_node


@dataclass(frozen=True)
class PlanRequest:
    """What is asked of the plan. None means: the planner (or the engine's default) decides."""

    weight_format: str | None = None
    """bf16, fp16, fp8, int8 (W8A8) or int4 (AWQ/GPTQ); None: the checkpoint's own format."""
    kv_dtype: str = "auto"
    max_model_len: int | None = None
    concurrency: int | None = None
    """Concurrent sequences of max_model_len the whole cluster must hold; None: as many as fit."""
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    parallel: Parallelism | None = None
    """A layout fixed by the config; None: search all."""
    avg_context: int | None = None
    """Average tokens per running sequence, for KV reads and concurrency; None: half the max."""
    cpu_kv_space_gib: int = 4
    """VLLM_CPU_KVCACHE_SPACE for vLLM's CPU build."""
    block_size: int | None = None
    mtp: bool = False
    """Load DeepSeek's MTP layer (speculative decoding)."""
    enforce_eager: bool = False


@dataclass(frozen=True)
class Layout:
    """One way to run the model on the cluster, judged. Counts are per replica unless named
    otherwise; `decode_tokens_per_s` is the whole cluster's roofline at `concurrency`."""

    tp: int
    pp: int
    dp: int
    attn_dp: int
    ep: bool
    feasible: bool
    reason: str
    memory: DeviceMemory
    kv_budget: int
    """Bytes per device given to the KV cache (VLLM_CPU_KVCACHE_SPACE on the CPU)."""
    kv_tokens: int
    max_concurrency: int
    concurrency: int
    decode_tokens_per_s: float
    single_stream_tokens_per_s: float
    max_model_len: int
    max_num_seqs: int
    """vLLM's max_num_seqs for one engine core (one per DP-attention rank)."""
    max_num_batched_tokens: int
    gpu_memory_utilization: float | None
    block_size: int
    kv_cache_space_gib: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.pp * self.attn_dp

    @property
    def devices_used(self) -> int:
        return self.devices_per_replica * self.dp

    @property
    def label(self) -> str:
        if self.attn_dp > 1:
            return f"dp-attention {self.attn_dp} + ep x{self.dp}"
        return f"tp {self.tp} x pp {self.pp} x{self.dp}"

    def engine_args(self) -> dict[str, int | float | bool]:
        """vLLM arguments (snake_case) this layout fills in for one replica."""
        args: dict[str, int | float | bool] = {
            "tensor_parallel_size": self.tp,
            "pipeline_parallel_size": self.pp,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
        }
        if self.attn_dp > 1:
            args["data_parallel_size"] = self.attn_dp
        if self.ep:
            args["enable_expert_parallel"] = True
        if self.gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = self.gpu_memory_utilization
        return args


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidates(m: ModelFacts, cluster: ClusterShape) -> list[tuple[Parallelism, int]]:
    """Every (replica layout, replica count) the cluster's shape allows."""
    dpn, nodes = cluster.devices_per_node, cluster.nodes
    if cluster.device.vendor == "cpu":
        return [(Parallelism(), cluster.devices)]
    out: list[tuple[Parallelism, int]] = []
    for tp in _divisors(dpn):
        for pp in _divisors(dpn // tp):  # a replica inside one node
            out.append((Parallelism(tp=tp, pp=pp), nodes * (dpn // (tp * pp))))
        if tp == dpn:  # one stage per node
            # A stage holds at least one layer (plans for many nodes, as alternatives).
            stages = range(2, min(nodes, m.num_layers) + 1)
            out += [(Parallelism(tp=tp, pp=pp), nodes // pp) for pp in stages]
    if m.mla is not None and m.moe is not None and dpn > 1:
        spans = _divisors(nodes) if cluster.device.multi_node_ep else [1]
        out += [(Parallelism(attn_dp=dpn * k, ep=True), nodes // k) for k in spans]
    return out


def _shape_problem(
    m: ModelFacts, fmt: WeightFormat, device: Device, par: Parallelism
) -> str | None:
    if (why := fmt.unsupported_reason(device)) is not None:
        return why
    if m.num_heads % par.tp:
        return f"TP {par.tp} does not divide the {m.num_heads} attention heads"
    if m.mla is None and m.num_kv_heads % par.tp and par.tp % m.num_kv_heads:
        return f"TP {par.tp} and the {m.num_kv_heads} KV heads do not divide one another"
    if par.pp > m.num_layers:
        return f"PP {par.pp} exceeds the {m.num_layers} layers"
    if fmt.name in {"fp8", "int4"}:
        widths = [("MLP", m.intermediate_size, par.tp)]
        if m.moe is not None and not par.ep:
            widths.append(("expert", m.moe.expert_intermediate_size, par.tp * par.attn_dp))
        for what, width, split in widths:
            if width % split or (width // split) % QUANT_BLOCK:
                return (
                    f"{fmt.name} needs each rank's {what} width to be a multiple of "
                    f"{QUANT_BLOCK}; {width} / {split} = {width / split:g} is not"
                )
    return None


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def _memory_problem(mem: DeviceMemory, util: float | None) -> str | None:
    where = f"per device (stage {mem.stage})" if mem.stage else "per device"
    limit = f"the {_gib(mem.budget)} usable" + (f" at utilization {util:g}" if util else "")
    if mem.weights > mem.budget:
        return f"weights need {_gib(mem.weights)} {where}, more than {limit}"
    if mem.kv <= 0:
        return (
            f"weights {_gib(mem.weights)} + activations {_gib(mem.activation)} + runtime "
            f"{_gib(mem.reserve)} {where} exceed {limit}"
        )
    return None


def evaluate(
    m: ModelFacts,
    fmt: WeightFormat,
    cluster: ClusterShape,
    par: Parallelism,
    dp: int,
    request: PlanRequest,
) -> Layout:
    """Judge one layout: memory per device, KV tokens, concurrency and roofline speed."""
    device, is_cpu = cluster.device, cluster.device.vendor == "cpu"
    kv_bytes = kv_dtype_bytes(request.kv_dtype)
    util = (
        None
        if is_cpu
        else request.gpu_memory_utilization or (0.9 if device.vendor == "huawei" else 0.92)
    )
    batched = request.max_num_batched_tokens or device.default_batched_tokens
    block = request.block_size or (cpu_block_size(m) if is_cpu else GPU_BLOCK_SIZE)
    target = request.max_model_len or min(m.max_position_embeddings, DEFAULT_CONTEXT)
    inputs = MemoryInputs(
        utilization=1.0 if util is None else util,
        batched_tokens=batched,
        max_num_seqs=request.max_num_seqs or device.default_max_num_seqs,
        kv_dtype_bytes=kv_bytes,
        mtp=request.mtp,
        enforce_eager=request.enforce_eager,
        activation_element_bytes=2 if fmt.quantized else fmt.dense_bytes,
        max_model_len=target,
        block_size=block,
    )
    mem = device_memory(m, fmt, device, par, inputs)
    # On the CPU the KV cache is VLLM_CPU_KVCACHE_SPACE, taken from what the host has left.
    kv_budget = request.cpu_kv_space_gib * GiB if is_cpu else mem.kv
    cap = kv_capacity(kv_budget, mem.kv_bytes_per_token, block, target)
    kv_tokens = cap.tokens * par.attn_dp
    notes = [n for n in (fmt.note(device),) if n]
    max_len = target
    if request.max_model_len is None and 0 < kv_tokens < target:
        max_len = max(MIN_CONTEXT, 1 << (kv_tokens.bit_length() - 1))
        notes.append(f"context capped at {max_len:,} tokens by the KV room")
    reason = _shape_problem(m, fmt, device, par) or _memory_problem(mem, util)
    if reason is None and is_cpu and kv_budget > mem.kv:
        reason = (
            f"VLLM_CPU_KVCACHE_SPACE={request.cpu_kv_space_gib} GiB does not fit: the host has "
            f"{_gib(mem.kv)} left after weights, activations and the vLLM processes"
        )
    if reason is None and kv_tokens < max_len:
        reason = (
            f"KV room for {kv_tokens:,} tokens per replica, less than one {max_len:,}-token "
            f"sequence ({_gib(max(kv_budget, 0))} left per device for "
            f"{mem.kv_bytes_per_token:,} bytes per token)"
        )
    max_conc = kv_tokens // max_len if max_len else 0
    if reason is None and request.concurrency and max_conc * dp < request.concurrency:
        reason = (
            f"holds {max_conc * dp} concurrent {max_len:,}-token sequences "
            f"({max_conc} x {dp} replicas), {request.concurrency} requested"
        )
    avg = request.avg_context or max(1, max_len // 2)
    # max_num_seqs is per engine core, and DP attention runs one core per rank.
    rank_seqs = request.max_num_seqs or device.default_max_num_seqs
    seqs = max(1, min(rank_seqs * par.attn_dp, kv_tokens // avg))
    per_replica = seqs if request.concurrency is None else min(seqs, -(-request.concurrency // dp))
    feasible = reason is None
    if feasible and dp == 1 and cluster.devices > 1:
        notes.append("one replica: a failed device stops the model until it restarts")
    net = Network(cluster.devices_per_node, cluster.network_bandwidth)
    speed = decode_estimate(m, fmt, device, par, per_replica, avg, kv_bytes, net)
    single = decode_estimate(m, fmt, device, par, 1, avg, kv_bytes, net)
    return Layout(
        tp=par.tp,
        pp=par.pp,
        dp=dp,
        attn_dp=par.attn_dp,
        ep=par.ep,
        feasible=feasible,
        reason=reason or "fits",
        memory=mem,
        kv_budget=max(kv_budget, 0),
        kv_tokens=kv_tokens,
        max_concurrency=max_conc,
        concurrency=per_replica * dp if feasible else 0,
        decode_tokens_per_s=speed.tokens_per_s * dp if feasible else 0.0,
        single_stream_tokens_per_s=single.tokens_per_s if feasible else 0.0,
        max_model_len=max_len,
        max_num_seqs=-(-seqs // par.attn_dp),
        max_num_batched_tokens=batched,
        gpu_memory_utilization=util,
        block_size=block,
        kv_cache_space_gib=request.cpu_kv_space_gib if is_cpu else None,
        notes=tuple(notes),
    )
