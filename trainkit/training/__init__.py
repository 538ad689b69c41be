"""The training engine: the loop, the procedure around it, checkpoints, the run directory."""
