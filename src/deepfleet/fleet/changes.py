"""What `deepfleet apply` would change: the running fleet's config against a new one.

Pure: `changes(old, new)` reads two configs and returns an ApplyPlan, which `apply --dry-run`
prints and the controller carries out (deepfleet.fleet.rollout). Per model, one action:

- `add` / `remove`: a model new in the config, or gone from it;
- `replace`: anything its engines are started with differs (engine, engine_args, engine_env,
  source, parallel, dtype, max_model_len, ...): new replicas start, become ready, then the old
  ones drain and stop;
- `scale`: only the replica count differs: replicas start, or the newest drain and stop;
- `retarget`: only the autoscaling targets differ (`autoscale:`, or the bounds of a
  `replicas: {min, max}` range): no replica starts or stops; the controller's autoscaler
  takes the new targets at its next tick (a count outside new bounds is moved into them);
- `route`: only the routing policy differs: the gateway switches at its next state read;
- `keep`: nothing differs.

Sections the controller cannot change while it runs (gateway, kv_cache, cluster, ui, deploy,
state_dir) are listed in `not_applied` with the way to change them: `down`, then `up`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from deepfleet.config.autoscale import ReplicaRange
from deepfleet.config.schema import FleetConfig, ModelSpec

Action = Literal["add", "remove", "replace", "scale", "retarget", "route", "keep"]
# ModelSpec fields that change without restarting an engine.
LIVE_FIELDS = frozenset({"replicas", "autoscale", "routing"})
RESTART_SECTIONS = ("gateway", "kv_cache", "cluster", "ui", "deploy", "state_dir")


@dataclass(frozen=True)
class ModelChange:
    model: str
    action: Action
    old_replicas: int | str = 0  # an int, "auto" (the planner decides at start), or "min..max"
    new_replicas: int | str = 0
    differences: list[str] = field(default_factory=list)
    """`field: old -> new` lines, nested fields dotted (engine_args.max_num_seqs)."""


@dataclass(frozen=True)
class ApplyPlan:
    models: list[ModelChange]
    not_applied: list[str] = field(default_factory=list)

    @property
    def changes_anything(self) -> bool:
        return any(m.action != "keep" for m in self.models)

    def lines(self) -> list[str]:
        """The plan as `apply --dry-run` prints it."""
        out: list[str] = []
        for m in self.models:
            count = (
                f"{m.old_replicas} -> {m.new_replicas} replicas"
                if m.old_replicas != m.new_replicas
                else f"{m.new_replicas} replicas"
            )
            out.append(f"{m.model}: {m.action} ({count})")
            out.extend(f"  {d}" for d in m.differences)
        out.extend(f"not applied: {n}" for n in self.not_applied)
        if not self.changes_anything:
            out.append("nothing to change in the running fleet")
        return out

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "changes_anything": self.changes_anything}


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """Leaves by dotted path; an empty mapping has none (so {} -> {a: 1} is one line)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every leaf that differs (one side absent: `unset`)."""
    a, b = _flat(old, ""), _flat(new, "")

    def show(d: dict[str, Any], k: str) -> str:
        return repr(d[k]) if k in d else "unset"

    return [
        f"{k}: {show(a, k)} -> {show(b, k)}"
        for k in sorted(a.keys() | b.keys())
        if k not in a or k not in b or a[k] != b[k]
    ]


def _count(spec: ModelSpec) -> int | str:
    r = spec.replicas
    return r if isinstance(r, int | str) else str(r)


def _retargeted(old: ModelSpec, new: ModelSpec) -> bool:
    """Autoscaled before and after, with other targets or bounds (the routing unchanged)."""
    ranges = isinstance(old.replicas, ReplicaRange) and isinstance(new.replicas, ReplicaRange)
    return (
        ranges
        and old.routing == new.routing
        and (old.replicas != new.replicas or old.autoscale != new.autoscale)
    )


def model_change(old: ModelSpec | None, new: ModelSpec | None) -> ModelChange:
    if old is None and new is not None:
        return ModelChange(new.name, "add", 0, _count(new))
    if new is None and old is not None:
        return ModelChange(old.name, "remove", _count(old), 0)
    assert old is not None and new is not None
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    diff = differences(a, b)
    engine = differences(
        {k: v for k, v in a.items() if k not in LIVE_FIELDS},
        {k: v for k, v in b.items() if k not in LIVE_FIELDS},
    )
    action: Action
    if engine:
        action = "replace"
    elif _retargeted(old, new):
        action = "retarget"
    elif old.replicas != new.replicas:
        action = "scale"
    elif old.routing != new.routing:
        action = "route"
    else:
        action = "keep"
    return ModelChange(new.name, action, _count(old), _count(new), diff)


def changes(old: FleetConfig, new: FleetConfig) -> ApplyPlan:
    """The plan that takes a fleet running `old` to `new` (see the module docstring)."""
    before = {m.name: m for m in old.models}
    after = {m.name: m for m in new.models}
    names = dict.fromkeys([*after, *before])  # the new config's order, then removed models
    models = [model_change(before.get(n), after.get(n)) for n in names]
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    not_applied = [
        f"{line} (restart the fleet: `deepfleet down`, then `deepfleet up`)"
        for section in RESTART_SECTIONS
        for line in differences({section: a.get(section)}, {section: b.get(section)})
    ]
    return ApplyPlan(models, not_applied)
