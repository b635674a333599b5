"""Training runs and sweeps of the scaling-law laboratory (Hydra entry points live here)."""
