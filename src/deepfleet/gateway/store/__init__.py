"""The state backend: API keys, the usage ledger and rate-limit accounting.

`open_state` (open.py) builds the backend gateway.state names; base.py states the contract
both backends keep. See docs/ha.md for how exact the limits are across gateways.
"""
