"""GPU scenarios of issue 11 (run by scripts/gpu/run_scenario.py on the lent H200)."""
