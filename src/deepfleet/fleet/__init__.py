"""The control plane: replicas wanted vs running, supervisors, launchers and the fleet state."""
