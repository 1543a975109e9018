"""`deepfleet doctor`: a preflight for the failures multi-node bring-up hits most.

Facts are collected on every node (facts.py, run through Ray in cluster mode), judged by pure
checks (checks.py) into findings of one line each, with the fix; the cluster part (cluster.py)
adds what needs two nodes: ports reachable between them and clock skew.
"""

from deepfleet.fleet.doctor.checks import Expectations, Finding, judge_node, port_findings
from deepfleet.fleet.doctor.facts import NodeFacts, collect

__all__ = ["Expectations", "Finding", "NodeFacts", "collect", "judge_node", "port_findings"]
