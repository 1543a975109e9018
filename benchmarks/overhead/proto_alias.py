"""pytest plugin: run tests/gateway against the prototype copy (benchmarks/overhead/proto).

    DFGW_FAST_RELAY=1 DFGW_RAW_ASGI=1 DFGW_RAW_UPSTREAM=1 DFGW_SPLICE=1 \\
    PYTHONPATH=benchmarks/overhead .venv/bin/python -m pytest -p proto_alias tests/gateway -q

Every `deepfleet.gateway[.X]` import resolves to `proto[.X]`, so the tests exercise the copy
with whatever DFGW_* switches are set.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import proto

sys.modules["deepfleet.gateway"] = proto
for info in pkgutil.iter_modules(proto.__path__):
    if info.name == "__main__":
        continue
    sys.modules[f"deepfleet.gateway.{info.name}"] = importlib.import_module(f"proto.{info.name}")
