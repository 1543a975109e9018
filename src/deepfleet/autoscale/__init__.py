"""Autoscaling: how many replicas each model should run, decided from its latency targets.

`signals.py` reads the gateway's /metrics into what the controller observes; `decide.py` is
the decision core (pure: an Observation in, a Decision out, no I/O), used by
the controller (fleet/autoscaler.py) and by the simulator (sim/autoscale_fleet.py) alike;
`capacity.py` turns a replica's step-time model into the request rate it serves within the
targets, which the core's predictive sizing divides the arrival rate by.
"""

from deepfleet.autoscale.capacity import replica_capacity
from deepfleet.autoscale.decide import Autoscaler, Decision, Observation, Targets

__all__ = ["Autoscaler", "Decision", "Observation", "Targets", "replica_capacity"]
