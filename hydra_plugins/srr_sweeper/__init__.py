"""srr-bench's Hydra sweeper (see skip_finished.py)."""
