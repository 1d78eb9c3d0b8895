"""Sweeps: the Hydra config tree (``sweeps/conf``) and the sweep runner (see README.md here)."""
