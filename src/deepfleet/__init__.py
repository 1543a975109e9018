"""deepfleet: serve DeepSeek-R1 on a fleet of nodes from one config file."""

__version__ = "0.1.0"
