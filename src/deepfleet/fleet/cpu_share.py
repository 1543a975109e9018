"""How CPU replicas on one machine share it (vLLM's CPU build): cores to bind
(VLLM_CPU_OMP_THREADS_BIND) and GiB of KV cache (VLLM_CPU_KVCACHE_SPACE) per replica.

vLLM pins one OpenMP thread per given core and spins between kernels, so two engines given
the same core slow each other many times over: every replica gets cores of its own, split
by the most replicas the config can run on the machine (an autoscaled range's max), so a
replica keeps its cores however many run and one the autoscaler adds shares none.
"""

from __future__ import annotations

from deepfleet.config.autoscale import ReplicaRange
from deepfleet.config.schema import ModelSpec

GIB = 2**30
CPU_KV_MIN_GIB, CPU_KV_MAX_GIB, CPU_KV_SHARE = 1, 2, 0.15


def cpu_kv_gib(available_bytes: int, cpu_replicas: int) -> int:
    """Whole GiB: vLLM reads VLLM_CPU_KVCACHE_SPACE with int()."""
    share = available_bytes * CPU_KV_SHARE / max(cpu_replicas, 1) / GIB
    return int(min(CPU_KV_MAX_GIB, max(CPU_KV_MIN_GIB, share)))


def _share(cores: list[int], index: int, count: int) -> list[int]:
    per = len(cores) // count
    return cores[index * per : (index + 1) * per]


def cpu_binding(cores: list[int], index: int, count: int) -> str | None:
    """Split the cores evenly between CPU replicas; None (vLLM's auto) for a single replica."""
    if count <= 1:
        return None
    mine = _share(cores, index, count)
    return ",".join(str(c) for c in mine) if mine else "nobind"


def cpu_affinity(cores: list[int], index: int, count: int) -> tuple[int, ...] | None:
    """The CPUs replica `index`'s processes may run on: every core but those bound to the
    other replicas; None (inherit) when no core is bound to another.

    Not only tidiness: `import torch` (MKL counting cores) pins the importing thread to each
    allowed CPU in turn, and on a core where another engine's OpenMP worker is bound and busy
    it gets about 1% of it: an engine started next to a loaded one stalled for minutes
    (benchmarks/autoscale/stall_probe.py, docs/autoscaling.md)."""
    if count <= 1 or not _share(cores, index, count):  # one replica, or nobind
        return None
    others = {c for j in range(count) if j != index for c in _share(cores, j, count)}
    return tuple(c for c in cores if c not in others)


def cpu_slots(model: ModelSpec, planned: int) -> int:
    """CPU replicas a model's cores and memory are split for: the most it can run (an
    autoscaled range's max), so that replica N owns the same cores however many run; a
    replica the autoscaler adds then never shares cores with one planned when fewer ran."""
    r = model.replicas
    return max(planned, r.max) if isinstance(r, ReplicaRange) else planned
