"""Evaluation and analysis of runs: held-out and ablation passes, bootstrap CIs, what
each node's text carries, the report behind `python -m neuromas_dist.evaluate`."""
